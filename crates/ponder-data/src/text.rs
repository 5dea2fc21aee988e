//! [`TextDataset`]: labelled texts (single sentences or sentence pairs).
//!
//! Readers: [`read_tsv`](crate::read_tsv) (GLUE-style TSV files) and
//! [`read_class_folders`](crate::read_class_folders) (one folder per class, e.g.
//! SpamAssassin).

/// One labelled text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextExample {
    /// The text (first sentence of a pair).
    pub text: String,
    /// The second sentence, for sentence-pair tasks (e.g. GLUE's MRPC or RTE).
    pub text_pair: Option<String>,
    /// Index into [`TextDataset::label_names`].
    pub label: usize,
}

impl TextExample {
    /// A single-sentence example.
    pub fn new(text: impl Into<String>, label: usize) -> Self {
        Self {
            text: text.into(),
            text_pair: None,
            label,
        }
    }
}

/// Labelled texts and the names of their labels.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextDataset {
    /// The examples, in file order.
    pub examples: Vec<TextExample>,
    /// Label names; `examples[i].label` indexes this.
    pub label_names: Vec<String>,
}

impl TextDataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Number of classes (`label_names.len()`).
    pub fn n_classes(&self) -> usize {
        self.label_names.len()
    }

    /// How many examples each label has (indexed by label).
    pub fn label_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.label_names.len()];
        for e in &self.examples {
            if let Some(c) = counts.get_mut(e.label) {
                *c += 1;
            }
        }
        counts
    }

    /// Labels of the examples at `indices`.
    ///
    /// # Panics
    /// If an index is `>= len()`.
    pub fn labels_of(&self, indices: &[usize]) -> Vec<usize> {
        indices.iter().map(|&i| self.examples[i].label).collect()
    }

    /// A new data set with the examples at `indices` (cloned, in that order) and the same
    /// label names.
    ///
    /// # Panics
    /// If an index is `>= len()`.
    pub fn subset(&self, indices: &[usize]) -> TextDataset {
        TextDataset {
            examples: indices.iter().map(|&i| self.examples[i].clone()).collect(),
            label_names: self.label_names.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_subsets() {
        let ds = TextDataset {
            examples: vec![
                TextExample::new("a", 0),
                TextExample::new("b", 1),
                TextExample::new("c", 1),
            ],
            label_names: vec!["neg".into(), "pos".into()],
        };
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.n_classes(), 2);
        assert_eq!(ds.label_counts(), vec![1, 2]);
        assert_eq!(ds.labels_of(&[2, 0]), vec![1, 0]);
        let sub = ds.subset(&[2, 0]);
        assert_eq!(sub.examples[0].text, "c");
        assert_eq!(sub.label_names, ds.label_names);
    }
}
