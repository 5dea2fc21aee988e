//! Users' own images: a folder with one sub-folder of PNG or JPEG files per class,
//! read into an [`ImageSet`] of square grey-scale or RGB images.
//!
//! ```text
//! flowers/train/          <- the root given to read_image_folder
//!   daisy/  001.jpg 002.png ...
//!   rose/   a.jpeg b.JPG ...
//!   tulip/  ...
//! ```
//!
//! Files ending in `.png`, `.jpg` or `.jpeg` (in any case) are read; other files, nested
//! folders and hidden entries (names starting with `.`) are ignored. The format is
//! guessed from the content, so a PNG named `x.jpg` still decodes. Every image is
//! converted to grey scale (the `image` crate's Rec. 709 luma) or RGB (an alpha channel
//! is dropped), then resized to `image_size`×`image_size` with bilinear filtering; the
//! aspect ratio is not kept. Only the resized pixels are kept in memory, and images are
//! decoded on all cores.

use std::ffi::OsStr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use image::ImageReader;
use image::imageops::{self, FilterType};
use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::idx::ImageSet;

/// File extensions read as images, compared case-insensitively.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// What an image folder should look like, for [`DataError::MissingDataset`] and the
/// other errors of [`read_image_folder`].
const LAYOUT: &str = "expected a folder with one sub-folder of PNG or JPEG images per class";

/// How [`read_image_folder`] turns image files into pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageFolderSpec {
    /// Side of the square images produced: every image is resized to
    /// `image_size`×`image_size` (bilinear filtering, aspect ratio not kept). Must be
    /// positive.
    pub image_size: usize,
    /// Channels produced: 1 (grey scale) or 3 (RGB).
    pub channels: usize,
    /// Whether a file that fails to decode is recorded in [`ImageFolder::skipped`]
    /// instead of being an error.
    pub skip_bad_images: bool,
}

impl ImageFolderSpec {
    /// Square images of side `image_size` with `channels` channels (1 or 3); a file
    /// that fails to decode is an error.
    pub fn new(image_size: usize, channels: usize) -> Self {
        Self {
            image_size,
            channels,
            skip_bad_images: false,
        }
    }

    /// Sets [`ImageFolderSpec::skip_bad_images`].
    pub fn with_skip_bad_images(mut self, skip: bool) -> Self {
        self.skip_bad_images = skip;
        self
    }
}

/// The images of a class-per-folder data set, as read by [`read_image_folder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolder {
    /// The pixels: `image_size`×`image_size` images of `channels` channels, in the
    /// order of [`ImageFolder::files`].
    pub images: ImageSet,
    /// The class of each image: an index into [`ImageFolder::class_names`].
    pub labels: Vec<usize>,
    /// The class names (sub-folder names), by label.
    pub class_names: Vec<String>,
    /// The file each image was read from.
    pub files: Vec<PathBuf>,
    /// Files that failed to decode, with the decoder's message (only with
    /// [`ImageFolderSpec::skip_bad_images`]).
    pub skipped: Vec<(PathBuf, String)>,
}

impl ImageFolder {
    /// Number of classes (`class_names.len()`; with a given class list, classes without
    /// a sub-folder count too).
    pub fn n_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Number of images read.
    pub fn len(&self) -> usize {
        self.images.n_images
    }

    /// Whether no image was read (never the case for a folder [`read_image_folder`]
    /// accepted).
    pub fn is_empty(&self) -> bool {
        self.images.n_images == 0
    }
}

/// Reads the images under `root`: one sub-folder per class, each holding PNG or JPEG
/// files (see the [module documentation](self) for what is read and how).
///
/// `classes` chooses the classes and their labels:
/// * `None`: the sorted names of the sub-folders; there must be at least two, and every
///   one must hold at least one image.
/// * `Some(names)`: exactly these classes, labelled in this order (give a validation or
///   test folder the class list of its training folder). A sub-folder not in `names` is
///   an error. With `require_all`, every name needs a sub-folder; without it (validation
///   and test folders) a class may have none.
///
/// Images come folder by folder, folders in sorted name order whatever the order of
/// `names`, and files sorted by name within a folder, so the result is deterministic. A
/// class sub-folder with no image is always an error, also when every one of its files
/// was skipped.
///
/// # Errors
/// [`DataError::MissingDataset`] if `root` does not exist; [`DataError::InvalidInput`]
/// if `spec` has `channels` other than 1 or 3 or an `image_size` of 0, or if `names` is
/// empty or repeats a name; [`DataError::Format`] naming the folder or file for a root
/// that is not a folder or has no class sub-folders, a single class (with `None`), a
/// sub-folder that is not a class, a class without a sub-folder (with `require_all`), a
/// class folder without images, and an image that does not decode (with the decoder's
/// message; unless [`ImageFolderSpec::skip_bad_images`]); [`DataError::Io`] if a folder
/// cannot be listed or a file cannot be opened.
pub fn read_image_folder(
    root: impl AsRef<Path>,
    spec: &ImageFolderSpec,
    classes: Option<&[String]>,
    require_all: bool,
) -> Result<ImageFolder> {
    let root = root.as_ref();
    check_spec(root, spec, classes)?;
    if !root.exists() {
        return Err(DataError::MissingDataset {
            path: root.to_path_buf(),
            hint: LAYOUT.to_string(),
        });
    }
    if !root.is_dir() {
        return Err(DataError::format(root, format!("not a folder; {LAYOUT}")));
    }

    // The class sub-folders, sorted by name.
    let mut folders = Vec::new();
    for path in visible_entries(root)? {
        if !path.is_dir() {
            continue;
        }
        let name = path
            .file_name()
            .and_then(OsStr::to_str)
            .ok_or_else(|| DataError::format(&path, "folder name is not valid UTF-8"))?
            .to_string();
        folders.push((name, path));
    }
    if folders.is_empty() {
        return Err(DataError::format(
            root,
            format!("no class sub-folders; {LAYOUT}"),
        ));
    }

    let class_names: Vec<String> = match classes {
        None => {
            if folders.len() < 2 {
                return Err(DataError::format(
                    root,
                    format!(
                        "only one class sub-folder ({:?}); a classifier needs at least two classes",
                        folders[0].0
                    ),
                ));
            }
            folders.iter().map(|(name, _)| name.clone()).collect()
        }
        Some(names) => {
            if let Some((name, path)) = folders.iter().find(|(name, _)| !names.contains(name)) {
                return Err(DataError::format(
                    path,
                    format!(
                        "sub-folder {name:?} is not one of the {} classes {}",
                        names.len(),
                        quoted(names)
                    ),
                ));
            }
            if require_all
                && let Some(missing) = names
                    .iter()
                    .find(|name| !folders.iter().any(|(folder, _)| folder == *name))
            {
                return Err(DataError::format(
                    root,
                    format!(
                        "no sub-folder for class {missing:?}; every class needs one (classes {})",
                        quoted(names)
                    ),
                ));
            }
            names.to_vec()
        }
    };

    // The image files of every class folder, sorted by name, with their labels.
    let mut jobs: Vec<(PathBuf, usize)> = Vec::new();
    for (name, folder) in &folders {
        let label = class_names
            .iter()
            .position(|c| c == name)
            .expect("every folder is a class (checked above)");
        let before = jobs.len();
        jobs.extend(
            visible_entries(folder)?
                .into_iter()
                .filter(|path| is_image_file(path))
                .map(|path| (path, label)),
        );
        if jobs.len() == before {
            return Err(DataError::format(
                folder,
                format!(
                    "class folder {name:?} has no images (files ending in {})",
                    IMAGE_EXTENSIONS.map(|e| format!(".{e}")).join(", ")
                ),
            ));
        }
    }

    let image_len = spec.channels * spec.image_size * spec.image_size;
    let mut pixels = vec![0u8; jobs.len() * image_len];
    let outcomes = decode_all(&jobs, spec, &mut pixels, image_len);

    // Keep the images that decoded, moving them down over the skipped ones.
    let mut labels = Vec::with_capacity(jobs.len());
    let mut files = Vec::with_capacity(jobs.len());
    let mut skipped = Vec::new();
    for (k, ((path, label), outcome)) in jobs.into_iter().zip(outcomes).enumerate() {
        match outcome {
            Outcome::Read => {
                let kept = labels.len();
                if kept != k {
                    pixels.copy_within(k * image_len..(k + 1) * image_len, kept * image_len);
                }
                labels.push(label);
                files.push(path);
            }
            Outcome::Bad(message) if spec.skip_bad_images => skipped.push((path, message)),
            Outcome::Bad(message) => {
                return Err(DataError::format(
                    &path,
                    format!("cannot decode image: {message}"),
                ));
            }
            Outcome::Failed(error) => return Err(error),
        }
    }
    pixels.truncate(labels.len() * image_len);

    // A class folder whose every image was skipped.
    for (name, folder) in &folders {
        let label = class_names.iter().position(|c| c == name);
        if !labels.iter().any(|&l| Some(l) == label) {
            let n = skipped
                .iter()
                .filter(|(p, _)| p.starts_with(folder))
                .count();
            return Err(DataError::format(
                folder,
                format!("no image of class folder {name:?} could be decoded ({n} skipped)"),
            ));
        }
    }

    Ok(ImageFolder {
        images: ImageSet {
            n_images: labels.len(),
            n_channels: spec.channels,
            n_rows: spec.image_size,
            n_cols: spec.image_size,
            pixels,
        },
        labels,
        class_names,
        files,
        skipped,
    })
}

/// Checks the spec and the class list before touching the disk.
fn check_spec(root: &Path, spec: &ImageFolderSpec, classes: Option<&[String]>) -> Result<()> {
    let invalid = |message: String| {
        Err(DataError::InvalidInput {
            message: format!("reading image folder {}: {message}", root.display()),
        })
    };
    if spec.channels != 1 && spec.channels != 3 {
        return invalid(format!(
            "channels must be 1 (grey scale) or 3 (RGB), not {}",
            spec.channels
        ));
    }
    let side_fits = u32::try_from(spec.image_size).is_ok()
        && spec
            .image_size
            .checked_mul(spec.image_size)
            .and_then(|n| n.checked_mul(spec.channels))
            .is_some();
    if spec.image_size == 0 || !side_fits {
        return invalid(format!(
            "image_size must be positive and moderate, not {}",
            spec.image_size
        ));
    }
    if let Some(names) = classes {
        if names.is_empty() {
            return invalid("the list of classes is empty".to_string());
        }
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return invalid(format!("class {name:?} is given twice"));
            }
        }
    }
    Ok(())
}

/// The entries of `dir` whose names do not start with `.`, sorted by name.
fn visible_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let list_error = |e| DataError::io(dir, "list the folder", e);
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        if entry.file_name().as_encoded_bytes().first() != Some(&b'.') {
            paths.push(entry.path());
        }
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(paths)
}

/// A file (or a link to one) with one of the [`IMAGE_EXTENSIONS`].
fn is_image_file(path: &Path) -> bool {
    let image_extension = path
        .extension()
        .and_then(OsStr::to_str)
        .is_some_and(|ext| IMAGE_EXTENSIONS.iter().any(|e| ext.eq_ignore_ascii_case(e)));
    image_extension && path.is_file()
}

/// What became of one file.
enum Outcome {
    /// Decoded and stored.
    Read,
    /// The decoder refused it (its message).
    Bad(String),
    /// The file could not be opened or read.
    Failed(DataError),
}

/// Decodes every file of `jobs` into its `image_len` bytes of `pixels`, in parallel on
/// rayon's threads; the outcomes are in file order.
fn decode_all(
    jobs: &[(PathBuf, usize)],
    spec: &ImageFolderSpec,
    pixels: &mut [u8],
    image_len: usize,
) -> Vec<Outcome> {
    jobs.par_iter()
        .zip(pixels.par_chunks_exact_mut(image_len))
        .map(|((path, _), out)| decode_one(path, spec, out))
        .collect()
}

/// Decodes, converts and resizes one file into `out` (channel-major). A panic of the
/// decoder counts as a file that does not decode.
fn decode_one(path: &Path, spec: &ImageFolderSpec, out: &mut [u8]) -> Outcome {
    let reader = match ImageReader::open(path) {
        Ok(reader) => reader,
        Err(e) => return Outcome::Failed(DataError::io(path, "open", e)),
    };
    let reader = match reader.with_guessed_format() {
        Ok(reader) => reader,
        Err(e) => return Outcome::Failed(DataError::io(path, "read", e)),
    };
    let side = spec.image_size as u32; // fits: checked by check_spec
    let channels = spec.channels;
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        let image = reader
            .decode()
            .map_err(|e| e.to_string().trim_end().to_string())?;
        if channels == 1 {
            let grey = imageops::resize(&image.into_luma8(), side, side, FilterType::Triangle);
            out.copy_from_slice(grey.as_raw());
        } else {
            let rgb = imageops::resize(&image.into_rgb8(), side, side, FilterType::Triangle);
            let plane = out.len() / channels;
            for (c, out) in out.chunks_exact_mut(plane).enumerate() {
                for (p, v) in out.iter_mut().enumerate() {
                    *v = rgb.as_raw()[p * channels + c];
                }
            }
        }
        Ok::<(), String>(())
    }));
    match decoded {
        Ok(Ok(())) => Outcome::Read,
        Ok(Err(message)) => Outcome::Bad(message),
        Err(_) => Outcome::Bad("the decoder panicked on this file".to_string()),
    }
}

/// `"a", "b", "c"`.
fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use image::{GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};

    use super::*;

    const RED: usize = 2; // cat/2.png
    const GRADIENT: usize = 1; // cat/10.PNG
    const BLUE: usize = 0; // cat/1.jpg
    const GREEN: usize = 3; // dog/a.jpeg
    const GREY: usize = 4; // dog/b.png
    const TRANSLUCENT: usize = 5; // emu/z.png

    /// Three classes of PNG and JPEG files of different sizes, plus files and folders
    /// that must be ignored.
    fn make_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["cat/extra", "dog", "emu", ".git"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let cat = root.join("cat");
        RgbImage::from_pixel(10, 6, Rgb([255, 0, 0]))
            .save(cat.join("2.png"))
            .unwrap();
        RgbImage::from_pixel(20, 20, Rgb([0, 0, 255]))
            .save(cat.join("1.jpg"))
            .unwrap();
        // 8×8 is the target size: copied unchanged, which shows the channel-major layout.
        gradient()
            .save_with_format(cat.join("10.PNG"), image::ImageFormat::Png)
            .unwrap();
        std::fs::write(cat.join(".hidden.png"), b"ignored").unwrap();
        std::fs::write(cat.join("notes.txt"), b"ignored").unwrap();
        std::fs::write(cat.join("extra/nested.png"), b"ignored").unwrap();
        RgbImage::from_pixel(5, 9, Rgb([0, 255, 0]))
            .save(root.join("dog/a.jpeg"))
            .unwrap();
        GrayImage::from_pixel(3, 3, Luma([100]))
            .save(root.join("dog/b.png"))
            .unwrap();
        RgbaImage::from_pixel(7, 4, Rgba([0, 0, 255, 128]))
            .save(root.join("emu/z.png"))
            .unwrap();
        std::fs::write(root.join("README.md"), b"ignored").unwrap();
        std::fs::write(root.join(".git/x.png"), b"ignored").unwrap();
        dir
    }

    fn gradient() -> RgbImage {
        RgbImage::from_fn(8, 8, |x, y| Rgb([(x * 30) as u8, (y * 30) as u8, 7]))
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn rgb(size: usize) -> ImageFolderSpec {
        ImageFolderSpec::new(size, 3)
    }

    /// The error message of reading `root` (which must fail).
    fn error(root: &Path, spec: &ImageFolderSpec, classes: Option<&[String]>, all: bool) -> String {
        read_image_folder(root, spec, classes, all)
            .unwrap_err()
            .to_string()
    }

    /// Channel `c` of image `i`.
    fn plane(set: &ImageSet, i: usize, c: usize) -> &[u8] {
        let n = set.n_rows * set.n_cols;
        &set.image(i)[c * n..(c + 1) * n]
    }

    #[test]
    fn reads_rgb_in_sorted_order() {
        let dir = make_folder();
        let folder = read_image_folder(dir.path(), &rgb(8), None, true).unwrap();
        assert_eq!(folder.class_names, names(&["cat", "dog", "emu"]));
        assert_eq!(folder.n_classes(), 3);
        assert_eq!(folder.labels, vec![0, 0, 0, 1, 1, 2]);
        let files: Vec<_> = folder
            .files
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            files,
            [
                "cat/1.jpg",
                "cat/10.PNG",
                "cat/2.png",
                "dog/a.jpeg",
                "dog/b.png",
                "emu/z.png"
            ]
        );
        assert!(folder.skipped.is_empty());
        let set = &folder.images;
        assert_eq!(
            (set.n_images, set.n_channels, set.n_rows, set.n_cols),
            (6, 3, 8, 8)
        );
        assert_eq!(set.pixels.len(), 6 * 3 * 64);
        assert_eq!(folder.len(), 6);

        // uniform PNGs survive resizing exactly
        for (i, colour) in [
            (RED, [255, 0, 0]),
            (GREY, [100; 3]),
            (TRANSLUCENT, [0, 0, 255]),
        ] {
            for c in 0..3 {
                assert!(
                    plane(set, i, c).iter().all(|&v| v == colour[c]),
                    "image {i} channel {c}: {:?}",
                    plane(set, i, c)
                );
            }
        }
        // JPEG is lossy: close to the colour
        for (i, colour) in [(BLUE, [0u8, 0, 255]), (GREEN, [0, 255, 0])] {
            for c in 0..3 {
                assert!(
                    plane(set, i, c).iter().all(|&v| v.abs_diff(colour[c]) <= 8),
                    "image {i} channel {c}: {:?}",
                    plane(set, i, c)
                );
            }
        }
        // channel-major layout: plane c, then row y, then column x
        let g = gradient();
        for c in 0..3 {
            let expected: Vec<u8> = g.pixels().map(|p| p.0[c]).collect();
            assert_eq!(plane(set, GRADIENT, c), expected.as_slice());
        }
    }

    #[test]
    fn reads_grey_scale() {
        let dir = make_folder();
        let folder =
            read_image_folder(dir.path(), &ImageFolderSpec::new(5, 1), None, false).unwrap();
        let set = &folder.images;
        assert_eq!(
            (set.n_images, set.n_channels, set.n_rows, set.n_cols),
            (6, 1, 5, 5)
        );
        assert_eq!(set.pixels.len(), 6 * 25);
        assert_eq!(folder.labels, vec![0, 0, 0, 1, 1, 2]);
        // Rec. 709 luma: 0.2126 * 255 = 54.2
        assert!(
            set.image(RED).iter().all(|&v| v == 54),
            "{:?}",
            set.image(RED)
        );
        assert!(set.image(GREY).iter().all(|&v| v == 100));
    }

    #[test]
    fn classes_can_be_given_in_another_order() {
        let dir = make_folder();
        let order = names(&["emu", "dog", "cat"]);
        let folder = read_image_folder(dir.path(), &rgb(4), Some(&order), true).unwrap();
        assert_eq!(folder.class_names, order);
        // files in folder order still; labels follow the given names
        assert_eq!(folder.labels, vec![2, 2, 2, 1, 1, 0]);
        assert!(folder.files[0].ends_with("cat/1.jpg"));

        // a class without a sub-folder: fine for a validation folder, not with require_all
        let more = names(&["cat", "dog", "emu", "fox"]);
        let folder = read_image_folder(dir.path(), &rgb(4), Some(&more), false).unwrap();
        assert_eq!(folder.n_classes(), 4);
        assert_eq!(folder.labels, vec![0, 0, 0, 1, 1, 2]);
        let msg = error(dir.path(), &rgb(4), Some(&more), true);
        assert!(
            msg.contains(&dir.path().display().to_string())
                && msg.contains("no sub-folder for class \"fox\""),
            "{msg}"
        );

        // a sub-folder that is not a class
        let fewer = names(&["cat", "emu"]);
        let msg = error(dir.path(), &rgb(4), Some(&fewer), false);
        assert!(
            msg.contains(&dir.path().join("dog").display().to_string())
                && msg.contains("is not one of the 2 classes \"cat\", \"emu\""),
            "{msg}"
        );
    }

    #[test]
    fn folder_errors_name_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");

        let err = read_image_folder(&root, &rgb(8), None, true).unwrap_err();
        assert!(matches!(err, DataError::MissingDataset { .. }), "{err}");
        let path = root.display().to_string();
        assert!(err.to_string().contains(&path), "{err}");

        std::fs::write(&root, b"a file").unwrap();
        let msg = error(&root, &rgb(8), None, true);
        assert!(msg.contains(&path) && msg.contains("not a folder"), "{msg}");
        std::fs::remove_file(&root).unwrap();

        std::fs::create_dir_all(root.join(".hidden")).unwrap();
        std::fs::write(root.join("a.png"), b"x").unwrap();
        let msg = error(&root, &rgb(8), None, true);
        assert!(
            msg.contains(&path) && msg.contains("no class sub-folders"),
            "{msg}"
        );

        std::fs::create_dir(root.join("only")).unwrap();
        GrayImage::new(2, 2).save(root.join("only/x.png")).unwrap();
        let msg = error(&root, &rgb(8), None, true);
        assert!(
            msg.contains(&path) && msg.contains("only one class sub-folder (\"only\")"),
            "{msg}"
        );

        std::fs::create_dir(root.join("empty")).unwrap();
        std::fs::write(root.join("empty/readme.txt"), b"x").unwrap();
        let msg = error(&root, &rgb(8), None, true);
        assert!(
            msg.contains(&root.join("empty").display().to_string())
                && msg.contains("has no images"),
            "{msg}"
        );
    }

    #[test]
    fn bad_images_are_errors_or_skipped() {
        let dir = make_folder();
        let bad = dir.path().join("dog/c.png");
        std::fs::write(&bad, b"not a PNG at all").unwrap();
        let msg = error(dir.path(), &rgb(8), None, true);
        assert!(
            msg.contains(&bad.display().to_string()) && msg.contains("cannot decode image"),
            "{msg}"
        );

        let skip = rgb(8).with_skip_bad_images(true);
        let folder = read_image_folder(dir.path(), &skip, None, true).unwrap();
        assert_eq!(folder.len(), 6);
        assert_eq!(folder.skipped.len(), 1);
        assert_eq!(folder.skipped[0].0, bad);
        assert!(!folder.files.contains(&bad));
        assert_eq!(folder.labels, vec![0, 0, 0, 1, 1, 2]);
        // the images after the skipped one moved down: emu's is still (0, 0, 255)
        assert!(
            plane(&folder.images, TRANSLUCENT, 2)
                .iter()
                .all(|&v| v == 255)
        );

        // a class left without images is still an error
        let emu = dir.path().join("emu");
        std::fs::write(emu.join("z.png"), b"truncated").unwrap();
        let msg = error(dir.path(), &skip, None, true);
        assert!(
            msg.contains(&emu.display().to_string()) && msg.contains("(1 skipped)"),
            "{msg}"
        );
    }

    #[test]
    fn misnamed_files_decode_by_content() {
        let dir = make_folder();
        // a PNG named .jpg
        let png = dir.path().join("emu/y.jpg");
        RgbImage::from_pixel(3, 3, Rgb([0, 255, 0]))
            .save_with_format(&png, image::ImageFormat::Png)
            .unwrap();
        let folder = read_image_folder(dir.path(), &rgb(2), None, true).unwrap();
        assert_eq!(folder.len(), 7);
        assert!(folder.files[5].ends_with("emu/y.jpg"));
        assert!(plane(&folder.images, 5, 1).iter().all(|&v| v == 255));
    }

    #[test]
    fn bad_spec_and_class_list_are_invalid_input() {
        let dir = make_folder();
        for (spec, expected) in [
            (
                ImageFolderSpec::new(8, 2),
                "channels must be 1 (grey scale) or 3 (RGB), not 2",
            ),
            (ImageFolderSpec::new(0, 3), "image_size must be positive"),
        ] {
            let err = read_image_folder(dir.path(), &spec, None, true).unwrap_err();
            assert!(matches!(err, DataError::InvalidInput { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains(expected), "{msg}");
            assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        }
        let twice = names(&["cat", "dog", "cat"]);
        let msg = error(dir.path(), &rgb(8), Some(&twice), true);
        assert!(msg.contains("class \"cat\" is given twice"), "{msg}");
        let msg = error(dir.path(), &rgb(8), Some(&[]), true);
        assert!(msg.contains("the list of classes is empty"), "{msg}");
    }
}
