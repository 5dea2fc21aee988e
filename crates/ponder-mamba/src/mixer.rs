//! The Mamba mixer (selective SSM) and its residual block.
//!
//! Two execution modes share one caller-owned [`LayerState`]: [`MambaMixer::forward`]
//! runs a whole chunk of the sequence (the selective scan; training and prompt
//! prefill), continuing from a state when given one, and [`MambaMixer::step`] advances
//! one token (generation). Equations: Mamba's selective SSM (Gu & Dao 2023,
//! arXiv:2312.00752), as in the official state-spaces/mamba code; the two modes must agree.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::{silu, softplus};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};

use crate::config::MambaConfig;

/// The recurrent state of one layer, for one batch of rows.
#[derive(Debug, Clone)]
pub struct LayerState {
    /// The last `d_conv` pre-convolution inputs, oldest first (zeros before the
    /// sequence starts). Shape `[batch_size, d_inner, d_conv]`.
    pub conv: Tensor<3>,
    /// The SSM state h. Shape `[batch_size, d_inner, d_state]`.
    pub ssm: Tensor<3>,
}

impl LayerState {
    /// The state before any token: zeros.
    pub fn initial(batch_size: usize, mixer: &MambaMixer, device: &Device) -> Self {
        Self {
            conv: Tensor::zeros([batch_size, mixer.d_inner, mixer.d_conv], device),
            ssm: Tensor::zeros([batch_size, mixer.d_inner, mixer.d_state], device),
        }
    }

    /// Number of f32 values held (constant in the sequence length).
    pub fn numel(&self) -> usize {
        self.conv.shape().num_elements() + self.ssm.shape().num_elements()
    }

    /// The state of some rows (`rows` index the batch).
    pub fn select_rows(&self, rows: Tensor<1, Int>) -> Self {
        Self {
            conv: self.conv.clone().select(0, rows.clone()),
            ssm: self.ssm.clone().select(0, rows),
        }
    }
}

/// The selective-SSM mixer of one Mamba block (`mamba_simple.py`'s `Mamba`).
#[derive(Module, Debug)]
pub struct MambaMixer {
    /// `d → 2·d_inner`: the SSM input x and the gate z.
    pub in_proj: Linear,
    /// Depthwise causal convolution weights `[d_inner, d_conv]` (PyTorch's
    /// `[d_inner, 1, d_conv]` without the singleton).
    pub conv_weight: Param<Tensor<2>>,
    /// Convolution bias `[d_inner]`.
    pub conv_bias: Option<Param<Tensor<1>>>,
    /// `d_inner → R + 2n`: the low-rank Δ input, B and C (no bias).
    pub x_proj: Linear,
    /// `R → d_inner` with bias; Δ = softplus(dt_proj(·)).
    pub dt_proj: Linear,
    /// `A = −exp(A_log)`, `[d_inner, d_state]`, kept in f32.
    pub a_log: Param<Tensor<2>>,
    /// The skip `D`, `[d_inner]`.
    pub d_skip: Param<Tensor<1>>,
    /// `d_inner → d`.
    pub out_proj: Linear,
    /// d_inner.
    pub d_inner: usize,
    /// n.
    pub d_state: usize,
    /// Convolution width.
    pub d_conv: usize,
    /// R.
    pub dt_rank: usize,
}

impl MambaConfig {
    /// One mixer with Mamba's initialisation: S4D-real `A_log = log(1..n)`, `D = 1`,
    /// Δ's bias `softplus⁻¹(dt)` with `dt` log-uniform in `[dt_min, dt_max]`,
    /// `dt_proj.weight ~ U(±R^{−1/2}·dt_scale)`, PyTorch's default init elsewhere and
    /// `out_proj` rescaled by `1/√n_layers` (GPT-2's pre-norm residual rescaling, as in
    /// `mixer_seq_simple.py`).
    pub fn init_mixer(&self, device: &Device) -> MambaMixer {
        let d = self.d_model;
        let di = self.d_inner();
        let n = self.d_state;
        let r = self.dt_rank();
        let k = self.d_conv;
        let conv_bound = 1.0 / (k as f64).sqrt();
        let mut out_proj = LinearConfig::new(di, d)
            .with_bias(self.proj_bias)
            .init(device);
        let rescale = 1.0 / (self.n_layers as f64).sqrt();
        // Computed initial values must be leaves of the autodiff graph: detach, then track.
        out_proj.weight = Param::from_tensor(out_proj.weight.val().mul_scalar(rescale).detach());
        let dt_bound = self.dt_scale / (r as f64).sqrt();
        let mut dt_proj = LinearConfig::new(r, di)
            .with_initializer(Initializer::Uniform {
                min: -dt_bound,
                max: dt_bound,
            })
            .init(device);
        let (lo, hi) = (self.dt_min.ln(), self.dt_max.ln());
        let dt = Tensor::<1>::random([di], Distribution::Uniform(lo, hi), device)
            .exp()
            .clamp_min(self.dt_init_floor);
        // softplus⁻¹(y) = y + log(−expm1(−y)) = y + log(1 − e^{−y})
        let inv_softplus = dt.clone() + (dt.neg().exp().neg() + 1.0).log();
        dt_proj.bias = Some(Param::from_tensor(inv_softplus.detach()));
        let a_log: Vec<f32> = (0..di)
            .flat_map(|_| (1..=n).map(|j| (j as f32).ln()))
            .collect();
        let a_log = Tensor::<2>::from_data(TensorData::new(a_log, [di, n]), device);
        MambaMixer {
            in_proj: LinearConfig::new(d, 2 * di)
                .with_bias(self.proj_bias)
                .init(device),
            conv_weight: Initializer::Uniform {
                min: -conv_bound,
                max: conv_bound,
            }
            .init([di, k], device),
            conv_bias: self.conv_bias.then(|| {
                Initializer::Uniform {
                    min: -conv_bound,
                    max: conv_bound,
                }
                .init([di], device)
            }),
            x_proj: LinearConfig::new(di, r + 2 * n)
                .with_bias(false)
                .init(device),
            dt_proj,
            a_log: Param::from_tensor(a_log),
            d_skip: Initializer::Ones.init([di], device),
            out_proj,
            d_inner: di,
            d_state: n,
            d_conv: k,
            dt_rank: r,
        }
    }
}

impl MambaMixer {
    /// `A = −exp(A_log)`, `[d_inner, d_state]`.
    fn a(&self) -> Tensor<2> {
        self.a_log.val().exp().neg()
    }

    /// Δ, B and C from the post-convolution input `u` (`[..., d_inner]`).
    fn delta_b_c<const D: usize>(&self, u: Tensor<D>) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
        let (r, n) = (self.dt_rank, self.d_state);
        let dbc = self.x_proj.forward(u);
        let delta_r = dbc.clone().narrow(D - 1, 0, r);
        let b = dbc.clone().narrow(D - 1, r, n);
        let c = dbc.narrow(D - 1, r + n, n);
        // Δ = softplus(W_dt·δ + b_dt): the softplus includes dt_proj's bias (official code).
        let delta = softplus(self.dt_proj.forward(delta_r), 1.0);
        (delta, b, c)
    }

    /// Runs a chunk of `seq_len ≥ 1` tokens, continuing from `state` (zeros when
    /// `None`), and returns the outputs and the state after the chunk's last token.
    ///
    /// # Shapes
    /// - x: `[batch_size, seq_len, d_model]`
    /// - output: `[batch_size, seq_len, d_model]`
    pub fn forward(&self, x: Tensor<3>, state: Option<LayerState>) -> (Tensor<3>, LayerState) {
        let [batch, seq_len, _] = x.dims();
        let (di, k) = (self.d_inner, self.d_conv);
        let device = x.device();
        let xz = self.in_proj.forward(x);
        let xs = xz.clone().narrow(2, 0, di);
        // The gate z is split off in_proj's output before the convolution; only xs is
        // convolved (official Mamba code).
        let z = xz.narrow(2, di, di);

        // Causal depthwise convolution: the previous k − 1 inputs (zeros at the start of
        // the sequence) followed by this chunk; output t sees inputs t − k + 1 ..= t.
        let state = state.unwrap_or_else(|| LayerState::initial(batch, self, &device));
        let past = state.conv.narrow(2, 1, k - 1).swap_dims(1, 2);
        let h0 = state.ssm;
        let padded = Tensor::cat(vec![past, xs], 1); // [B, T + k − 1, di]
        let w = self.conv_weight.val();
        let mut conv =
            padded.clone().narrow(1, 0, seq_len) * w.clone().narrow(1, 0, 1).reshape([1, 1, di]);
        for tap in 1..k {
            conv = conv
                + padded.clone().narrow(1, tap, seq_len)
                    * w.clone().narrow(1, tap, 1).reshape([1, 1, di]);
        }
        if let Some(bias) = &self.conv_bias {
            conv = conv + bias.val().reshape([1, 1, di]);
        }
        let conv_state = padded.narrow(1, seq_len - 1, k).swap_dims(1, 2);
        let u = silu(conv); // [B, T, di]

        let (delta, b, c) = self.delta_b_c(u.clone());
        let (y, ssm) = selective_scan(u.clone(), delta, self.a(), b, c, h0);
        // The D skip reads u, the input after the convolution and SiLU, not in_proj's xs
        // (official Mamba code).
        let y = y + u * self.d_skip.val().reshape([1, 1, di]);
        let out = self.out_proj.forward(y * silu(z));
        (
            out,
            LayerState {
                conv: conv_state,
                ssm,
            },
        )
    }

    /// One token: updates `state` in place.
    ///
    /// # Shapes
    /// - x: `[batch_size, d_model]`
    /// - output: `[batch_size, d_model]`
    pub fn step(&self, x: Tensor<2>, state: &mut LayerState) -> Tensor<2> {
        let di = self.d_inner;
        let xz = self.in_proj.forward(x);
        let z = xz.clone().narrow(1, di, di);
        let (u, c) = self.update_state(xz.narrow(1, 0, di), state);
        let [batch, _] = u.dims();
        let y = (state.ssm.clone() * c.reshape([batch, 1, self.d_state]))
            .sum_dim(2)
            .reshape([batch, di]);
        let y = y + u * self.d_skip.val().unsqueeze_dim(0);
        self.out_proj.forward(y * silu(z))
    }

    /// Advances `state` by one token without computing the output: only the x half of
    /// in_proj, the convolution, Δ/B/C and the SSM update run (no C read-out, D skip,
    /// gate or out_proj). The state ends exactly as after [`MambaMixer::step`]; this is
    /// DYNAMAX's "update the conv/ssm states only" for layers a token skipped.
    ///
    /// # Shapes
    /// - x: `[batch_size, d_model]`
    pub fn advance(&self, x: Tensor<2>, state: &mut LayerState) {
        let di = self.d_inner;
        let mut xs = x.matmul(self.in_proj.weight.val().narrow(1, 0, di)); // [B, di]
        if let Some(bias) = &self.in_proj.bias {
            xs = xs + bias.val().narrow(0, 0, di).unsqueeze_dim(0);
        }
        self.update_state(xs, state);
    }

    /// The recurrence shared by [`MambaMixer::step`] and [`MambaMixer::advance`]: shifts
    /// the pre-convolution input `xs` `[B, d_inner]` into the conv state, convolves,
    /// and updates the SSM state; returns the post-convolution input u and C.
    fn update_state(&self, xs: Tensor<2>, state: &mut LayerState) -> (Tensor<2>, Tensor<2>) {
        let [batch, _] = xs.dims();
        let (di, k, n) = (self.d_inner, self.d_conv, self.d_state);
        let conv_state = Tensor::cat(
            vec![
                state.conv.clone().narrow(2, 1, k - 1),
                xs.reshape([batch, di, 1]),
            ],
            2,
        );
        let mut conv = (conv_state.clone() * self.conv_weight.val().unsqueeze_dim::<3>(0))
            .sum_dim(2)
            .reshape([batch, di]);
        if let Some(bias) = &self.conv_bias {
            conv = conv + bias.val().unsqueeze_dim(0);
        }
        state.conv = conv_state;
        let u = silu(conv); // [B, di]
        let (delta, b, c) = self.delta_b_c(u.clone());
        let decay = (delta.clone().reshape([batch, di, 1]) * self.a().unsqueeze_dim::<3>(0)).exp();
        let input = (delta * u.clone()).reshape([batch, di, 1]) * b.reshape([batch, 1, n]);
        state.ssm = decay * state.ssm.clone() + input;
        (u, c)
    }

    /// FLOPs of [`MambaMixer::advance`] for one row (conventions of
    /// [`MambaMixer::flops`]: the x half of in_proj, x_proj, dt_proj, ≈ 5 FLOPs per
    /// state element for the discretisation and update, ≈ 2·d_conv + 6 per channel for
    /// the convolution, its SiLU and Δ's softplus).
    pub fn advance_flops(&self, d_model: u64) -> u64 {
        let (di, n, r, k) = (
            self.d_inner as u64,
            self.d_state as u64,
            self.dt_rank as u64,
            self.d_conv as u64,
        );
        let matmul = |d_in: u64, d_out: u64| 2 * d_in * d_out;
        matmul(d_model, di)
            + matmul(di, r + 2 * n)
            + matmul(r, di)
            + di
            + 5 * di * n
            + di * (2 * k + 6)
    }

    /// FLOPs of the mixer for one row of `seq_len` tokens (one multiply-add = 2 FLOPs;
    /// in_proj, x_proj and out_proj have no bias, dt_proj has one; Δ's softplus, the
    /// scan's discretisation, update and read-out ≈ 7 FLOPs per state element; the
    /// convolution, SiLUs, D skip and gate ≈ 2·d_conv + 12 per channel).
    pub fn flops(&self, seq_len: u64, d_model: u64) -> u64 {
        let (di, n, r, k) = (
            self.d_inner as u64,
            self.d_state as u64,
            self.dt_rank as u64,
            self.d_conv as u64,
        );
        let t = seq_len;
        let matmul = |d_in: u64, d_out: u64| 2 * t * d_in * d_out;
        matmul(d_model, 2 * di)
            + matmul(di, r + 2 * n)
            + matmul(r, di)
            + t * di
            + 7 * t * di * n
            + t * di * (2 * k + 12)
            + matmul(di, d_model)
    }
}

/// The selective scan `h_t = exp(Δ_t ⊗ A) ⊙ h_{t−1} + (Δ_t ⊙ u_t) ⊗ B_t`,
/// `y_t = h_t · C_t` (A is discretised by ZOH, but B̄ is the simplified Euler `Δ·B`, as in
/// the official Mamba code), from `h0`.
///
/// A sequential loop over time with tensor operations, which never materialises the
/// `[batch, seq_len, d_inner, n]` tensors of `Ā` and `B̄u`: each step discretises its
/// own `[batch, d_inner, n]` slice. The per-step inputs are taken out of the sequence
/// in two levels (chunks of `SCAN_CHUNK` steps, then steps) because the backward of
/// each slice writes a gradient as large as the tensor it was sliced from: slicing the
/// whole sequence at every step would make the backward quadratic in the length.
///
/// # Shapes
/// - u, delta: `[batch, seq_len, d_inner]`; a: `[d_inner, n]`; b, c: `[batch, seq_len, n]`
/// - h0: `[batch, d_inner, n]`
/// - output: y `[batch, seq_len, d_inner]`, h_T `[batch, d_inner, n]`
pub fn selective_scan(
    u: Tensor<3>,
    delta: Tensor<3>,
    a: Tensor<2>,
    b: Tensor<3>,
    c: Tensor<3>,
    h0: Tensor<3>,
) -> (Tensor<3>, Tensor<3>) {
    let [batch, seq_len, di] = u.dims();
    let n = a.dims()[1];
    // Time-major [T, B, ·] so that a step is a leading-dimension slice.
    let du = (delta.clone() * u).swap_dims(0, 1);
    let delta = delta.swap_dims(0, 1);
    let b = b.swap_dims(0, 1);
    let c = c.swap_dims(0, 1);
    let a = a.unsqueeze_dim::<3>(0); // [1, di, n]
    let mut h = h0;
    let mut ys = Vec::with_capacity(seq_len);
    for start in (0..seq_len).step_by(SCAN_CHUNK) {
        let len = SCAN_CHUNK.min(seq_len - start);
        let chunk_delta = delta.clone().narrow(0, start, len);
        let chunk_du = du.clone().narrow(0, start, len);
        let chunk_b = b.clone().narrow(0, start, len);
        let chunk_c = c.clone().narrow(0, start, len);
        for i in 0..len {
            let delta_t = chunk_delta.clone().narrow(0, i, 1).reshape([batch, di, 1]);
            let du_t = chunk_du.clone().narrow(0, i, 1).reshape([batch, di, 1]);
            let b_t = chunk_b.clone().narrow(0, i, 1).reshape([batch, 1, n]);
            let c_t = chunk_c.clone().narrow(0, i, 1).reshape([batch, 1, n]);
            h = (delta_t * a.clone()).exp() * h + du_t * b_t;
            ys.push((h.clone() * c_t).sum_dim(2)); // [B, di, 1]
        }
    }
    let y = Tensor::cat(ys, 2).swap_dims(1, 2); // [B, T, di]
    (y, h)
}

/// Steps per chunk in [`selective_scan`]'s two-level slicing.
pub const SCAN_CHUNK: usize = 16;

/// A pre-norm residual block: `x + Mixer(RMSNorm(x))`.
#[derive(Module, Debug)]
pub struct MambaBlock {
    /// RMSNorm before the mixer.
    pub norm: RmsNorm,
    /// The mixer.
    pub mixer: MambaMixer,
}

impl MambaConfig {
    /// One residual block.
    pub fn init_block(&self, device: &Device) -> MambaBlock {
        MambaBlock {
            norm: RmsNormConfig::new(self.d_model)
                .with_epsilon(self.norm_eps)
                .init(device),
            mixer: self.init_mixer(device),
        }
    }
}

impl MambaBlock {
    /// A chunk of tokens, continuing from `state`. Shapes as [`MambaMixer::forward`].
    pub fn forward(&self, x: Tensor<3>, state: Option<LayerState>) -> (Tensor<3>, LayerState) {
        let (mixed, state) = self.mixer.forward(self.norm.forward(x.clone()), state);
        (x + mixed, state)
    }

    /// One token. Shapes as [`MambaMixer::step`].
    pub fn step(&self, x: Tensor<2>, state: &mut LayerState) -> Tensor<2> {
        let mixed = self.step_mixed(x.clone(), state);
        x + mixed
    }

    /// One token, returning the mixer's output alone (the block's output is `x` plus
    /// it): mamba_ssm's `Block` emits this pair, `(hidden_states, residual)`.
    pub fn step_mixed(&self, x: Tensor<2>, state: &mut LayerState) -> Tensor<2> {
        self.mixer.step(self.norm.forward(x), state)
    }

    /// Advances the layer's state by one token without computing its output (see
    /// [`MambaMixer::advance`]).
    pub fn advance(&self, x: Tensor<2>, state: &mut LayerState) {
        self.mixer.advance(self.norm.forward(x), state);
    }

    /// A chunk from a zero state, returning the mixer's output alone.
    pub fn forward_mixed(&self, x: Tensor<3>) -> Tensor<3> {
        self.mixer.forward(self.norm.forward(x), None).0
    }

    /// FLOPs of the block for one row and one token: the RMSNorm (≈ 5 per channel), the
    /// mixer and the residual addition.
    pub fn step_flops(&self, d_model: u64) -> u64 {
        5 * d_model + self.mixer.flops(1, d_model) + d_model
    }
}
