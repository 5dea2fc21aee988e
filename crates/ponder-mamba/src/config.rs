//! Configuration of the Mamba block and of the stacks built from it.

use burn::config::Config;
use ponder_core::PonderError;

/// A Mamba model: embedding, `n_layers` residual blocks, final RMSNorm (Gu & Dao 2023,
/// arXiv:2312.00752).
#[derive(Config, Debug, PartialEq)]
pub struct MambaConfig {
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Model width d.
    pub d_model: usize,
    /// Number of residual blocks.
    pub n_layers: usize,
    /// SSM state size n per channel. Default: 16.
    #[config(default = 16)]
    pub d_state: usize,
    /// Width of the causal depthwise convolution (at least 2). Default: 4.
    #[config(default = 4)]
    pub d_conv: usize,
    /// Expansion factor E (d_inner = E·d). Default: 2.
    #[config(default = 2)]
    pub expand: usize,
    /// Rank R of Δ's projection; default ⌈d/16⌉.
    #[config(default = "None")]
    pub dt_rank: Option<usize>,
    /// Smallest initial Δ. Default: 0.001.
    #[config(default = 0.001)]
    pub dt_min: f64,
    /// Largest initial Δ. Default: 0.1.
    #[config(default = 0.1)]
    pub dt_max: f64,
    /// Floor of the initial Δ. Default: 1e-4.
    #[config(default = 1e-4)]
    pub dt_init_floor: f64,
    /// Scale of `dt_proj.weight`'s initial range. Default: 1.
    #[config(default = 1.0)]
    pub dt_scale: f64,
    /// Bias in the convolution. Default: true.
    #[config(default = true)]
    pub conv_bias: bool,
    /// Bias in `in_proj` and `out_proj`. Default: false.
    #[config(default = false)]
    pub proj_bias: bool,
    /// RMSNorm epsilon. Default: 1e-5.
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// Language model: the output head is the embedding's transpose. Default: true.
    #[config(default = true)]
    pub tie_embeddings: bool,
}

impl MambaConfig {
    /// d_inner = expand · d_model.
    pub fn d_inner(&self) -> usize {
        self.expand * self.d_model
    }

    /// R = dt_rank, or ⌈d/16⌉.
    pub fn dt_rank(&self) -> usize {
        self.dt_rank.unwrap_or(self.d_model.div_ceil(16))
    }

    /// Checks every value, naming the first bad one (`model.*` keys).
    pub fn validate(&self) -> ponder_core::Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("d_state", self.d_state),
            ("d_conv", self.d_conv.saturating_sub(1)),
            ("expand", self.expand),
            ("dt_rank", self.dt_rank()),
        ];
        for (key, value) in positive {
            if value == 0 {
                let least = if key == "d_conv" { 2 } else { 1 };
                return Err(PonderError::config(
                    format!("model.{key}"),
                    format!("must be at least {least}"),
                ));
            }
        }
        if !(self.dt_min > 0.0 && self.dt_min <= self.dt_max) {
            return Err(PonderError::config(
                "model.dt_min",
                format!(
                    "need 0 < dt_min ≤ dt_max, got {} and {}",
                    self.dt_min, self.dt_max
                ),
            ));
        }
        if !(self.dt_init_floor > 0.0 && self.dt_scale > 0.0 && self.norm_eps > 0.0) {
            return Err(PonderError::config(
                "model.dt_init_floor",
                "dt_init_floor, dt_scale and norm_eps must be positive",
            ));
        }
        Ok(())
    }
}
