//! Building the multi-exit model of a method, and starting it from a pretrained encoder.

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use ponder_exits::HaltingHeadConfig;
use ponder_models::{Method, MultiExitClassifier, MultiExitConfig};

use crate::config::Experiment;

/// The model of `method` for this experiment: PABEE's per-layer heads; DeeBERT's
/// off-ramps also get a pooler each (`model.offramp_pooler`: their own on the layer's
/// pre-pooler features, or stacked on the main pooler's output); PALBERT has one head
/// shared by every layer and
/// the Lambda layer (with the head dropout on its input); PonderNet one shared head and
/// a linear λ head; JEI-DNN per-layer heads and a gate per early exit.
pub fn model_config(
    experiment: &Experiment,
    method: Method,
    n_classes: usize,
    vocab_size: usize,
) -> Result<MultiExitConfig> {
    let backbone = experiment.backbone_config(vocab_size.max(1), experiment.data.max_tokens)?;
    if matches!(method, Method::DeeBert | Method::JeiDnn) && backbone.n_layers() < 2 {
        bail!(
            "invalid value for `model.n_layers`: {} trains internal exits, so it needs at least 2 layers, not {}",
            experiment.model_kind(method).label(),
            backbone.n_layers()
        );
    }
    if method == Method::JeiDnn && n_classes < 2 {
        bail!(
            "jei_dnn's gates read the confidence of a prediction over at least 2 classes; the data has {n_classes}"
        );
    }
    let shared_head = experiment.model.shared_head.unwrap_or(method.has_halting());
    if shared_head && matches!(method, Method::DeeBert | Method::JeiDnn) {
        bail!(
            "invalid value for `model.shared_head`: {} trains its early exits' heads apart from the final one, so they cannot be one shared head",
            experiment.model_kind(method).label()
        );
    }
    let d = backbone.d_model();
    let halting = match method {
        Method::Palbert => {
            Some(HaltingHeadConfig::palbert(d).with_dropout(experiment.model.head_dropout))
        }
        Method::PonderNet => Some(HaltingHeadConfig::new(d)),
        Method::Pabee | Method::DeeBert | Method::FinalOnly | Method::JeiDnn => None,
    };
    Ok(MultiExitConfig::new(backbone, n_classes)
        .with_offramp_pooler((method == Method::DeeBert).then(|| experiment.offramp_pooler()))
        .with_shared_head(shared_head)
        .with_halting(halting)
        .with_gates(method.has_gates())
        .with_head_dropout(experiment.model.head_dropout)
        .with_head_input_norm(experiment.model.head_input_norm))
}

/// Replaces `model`'s encoder by `model.pretrained`'s, when the experiment names one;
/// the heads, and a pooler the checkpoint lacks, stay freshly initialised. The
/// checkpoint's pooler is the main pooler (the final exit's): DeeBERT's separate
/// off-ramp poolers are copies of it once stage 1 has fine-tuned it. Only a model that
/// starts training needs it: a trained or resumed one loads its own checkpoint.
pub fn load_pretrained(
    experiment: &Experiment,
    model: &mut MultiExitClassifier,
    vocab_size: usize,
    device: &Device,
) -> Result<()> {
    let Some(dir) = &experiment.model.pretrained else {
        return Ok(());
    };
    let hf = ponder_transformer::HfConfig::read(dir.join("config.json"))?;
    let file = ponder_core::SafeTensors::open(dir.join("model.safetensors"))?;
    let config = experiment.pretrained_config(dir, Some(vocab_size), experiment.data.max_tokens)?;
    let loaded = ponder_transformer::load_with_config(&hf, config, &file, device)
        .with_context(|| format!("loading the pretrained encoder in {}", dir.display()))?;
    let ponder_models::Backbone::Transformer(encoder) = &mut model.backbone else {
        bail!("`model.pretrained` needs the transformer backbone");
    };
    *encoder = loaded.encoder;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pretrained_encoder_is_checked_and_loaded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/ponder-transformer/tests/data/tiny-bert");
        let text = |d_model: usize, max_tokens: usize| {
            format!(
                "name = \"t\"\n[data]\ndataset = \"spamassassin\"\npath = \"x\"\ntokenizer = \"vocab.txt\"\nmax_tokens = {max_tokens}\n[model]\npretrained = {:?}\nn_layers = 3\nd_model = {d_model}\nn_heads = 4\nd_ff = 24\n[train]\nmethod = \"pabee\"\n[compare]\nmethods = [\"pabee\"]\n",
                dir.display().to_string()
            )
        };
        let experiment = Experiment::parse(&text(16, 8)).unwrap();
        let device = Device::default();
        let mut model = model_config(&experiment, Method::Pabee, 2, 40)
            .unwrap()
            .init(&device);
        load_pretrained(&experiment, &mut model, 40, &device).unwrap();
        let ponder_models::Backbone::Transformer(encoder) = &model.backbone else {
            panic!("a transformer")
        };
        let file = ponder_core::SafeTensors::open(dir.join("model.safetensors")).unwrap();
        let want = file
            .read("bert.embeddings.word_embeddings.weight", &[40, 16])
            .unwrap();
        let got = ponder_core::to_host(encoder.text.as_ref().unwrap().tokens.weight.val());
        assert_eq!(got, want);
        // sizes, vocabulary and positions that do not fit the checkpoint are named
        let e = Experiment::parse(&text(32, 8)).unwrap_err();
        assert!(format!("{e:#}").contains("model.d_model"), "{e:#}");
        let e = model_config(&experiment, Method::Pabee, 2, 41).unwrap_err();
        assert!(format!("{e:#}").contains("tokenizer"), "{e:#}");
        let e = model_config(
            &Experiment::parse(&text(16, 20)).unwrap(),
            Method::Pabee,
            2,
            40,
        );
        assert!(format!("{:#}", e.unwrap_err()).contains("data.max_tokens"));
        // images cannot use it
        let images = text(16, 8).replace("spamassassin", "fashion-mnist");
        assert!(Experiment::parse(&images).is_err());
    }

    #[test]
    fn methods_that_need_internal_exits_or_classes_are_refused_before_building_a_model() {
        // `--methods jei_dnn` or `--method dee_bert` on a one-layer experiment (whose own
        // method list passed validation) is an error naming the key, not a panic
        let experiment = Experiment::parse(
            "name = \"t\"\n[data]\ndataset = \"fashion-mnist\"\npath = \"x\"\n[model]\nn_layers = 1\nd_model = 16\nn_heads = 2\nd_ff = 32\n[train]\nmethod = \"pabee\"\n[compare]\nmethods = [\"pabee\"]\n",
        )
        .unwrap();
        for method in [Method::JeiDnn, Method::DeeBert] {
            let e = model_config(&experiment, method, 3, 0).unwrap_err();
            assert!(format!("{e:#}").contains("model.n_layers"), "{e:#}");
        }
        assert!(model_config(&experiment, Method::Pabee, 3, 0).is_ok());
        let two = Experiment::parse(
            "name = \"t\"\n[data]\ndataset = \"fashion-mnist\"\npath = \"x\"\n[model]\nn_layers = 2\nd_model = 16\nn_heads = 2\nd_ff = 32\n",
        )
        .unwrap();
        let e = model_config(&two, Method::JeiDnn, 1, 0).unwrap_err();
        assert!(format!("{e:#}").contains("2 classes"), "{e:#}");
    }

    #[test]
    fn model_shared_head_gives_palbert_per_layer_heads_and_is_refused_where_it_cannot_be() {
        let with = |shared: &str| {
            Experiment::parse(&format!(
                "name = \"t\"\n[data]\ndataset = \"fashion-mnist\"\npath = \"x\"\n[model]\nn_layers = 3\nd_model = 16\nn_heads = 2\nd_ff = 32\n{shared}"
            ))
            .unwrap()
        };
        let device = Device::flex();
        let heads = |e: &Experiment, method: Method| {
            model_config(e, method, 3, 0)
                .unwrap()
                .init(&device)
                .heads
                .classifiers
                .len()
        };
        // by default the halting methods share one head, the others have one per layer
        assert_eq!(heads(&with(""), Method::Palbert), 1);
        assert_eq!(heads(&with(""), Method::Pabee), 3);
        let per_layer = with("shared_head = false\n");
        assert_eq!(heads(&per_layer, Method::Palbert), 3);
        assert_eq!(heads(&per_layer, Method::PonderNet), 3);
        let shared = with("shared_head = true\n");
        assert_eq!(heads(&shared, Method::Pabee), 1);
        for method in [Method::DeeBert, Method::JeiDnn] {
            let e = model_config(&shared, method, 3, 0).unwrap_err();
            assert!(format!("{e:#}").contains("model.shared_head"), "{e:#}");
        }
    }
}
