//! The network on the GPU: its weight buffers, its WGSL (bias and ReLU,
//! softmax and its gradient, transposes, column sums, minibatch gathering)
//! and the standard kernels (`matmul` for every product, `saxpy` for every
//! update). Nothing but the held-out scores and the final weights is read
//! back into the guest.

use crate::model::{Model, argmax};
use agora_guest::prelude::*;

const WORKGROUP: u32 = 64;
/// The most workgroups along one dimension of a dispatch (WebGPU's limit).
const MAX_GROUPS: u32 = 65_535;

const DIMS: &str = "struct Dims { rows: u32, cols: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read> dims: Dims;
fn flat(g: vec3<u32>, n: vec3<u32>) -> u32 { return g.y * n.x * 64u + g.x; }
";

/// z += b (per column); with `bias_relu`, then max(z, 0).
const BIAS: &str = "@group(0) @binding(1) var<storage, read_write> z: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@compute @workgroup_size(64)
fn bias(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  let i = flat(g, n);
  if (i >= dims.rows * dims.cols) { return; }
  z[i] = z[i] + b[i % dims.cols];
}
@compute @workgroup_size(64)
fn bias_relu(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  let i = flat(g, n);
  if (i >= dims.rows * dims.cols) { return; }
  z[i] = max(z[i] + b[i % dims.cols], 0.0);
}
";

/// Per row: the logits plus bias become softmax minus the one-hot label,
/// over the batch size: the loss's gradient with respect to the logits.
const SOFTMAX_GRAD: &str = "@group(0) @binding(1) var<storage, read_write> z: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  let r = flat(g, n);
  if (r >= dims.rows) { return; }
  let base = r * dims.cols;
  var top = z[base] + b[0];
  for (var c = 1u; c < dims.cols; c++) { top = max(top, z[base + c] + b[c]); }
  var total = 0.0;
  for (var c = 0u; c < dims.cols; c++) { total += exp(z[base + c] + b[c] - top); }
  let scale = 1.0 / f32(dims.rows);
  for (var c = 0u; c < dims.cols; c++) {
    var p = exp(z[base + c] + b[c] - top) / total;
    if (c == labels[r]) { p -= 1.0; }
    z[base + c] = p * scale;
  }
}
";

/// dst (cols x rows) = src (rows x cols) transposed.
const TRANSPOSE: &str = "@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  let i = flat(g, n);
  if (i >= dims.rows * dims.cols) { return; }
  dst[(i % dims.cols) * dims.rows + i / dims.cols] = src[i];
}
";

/// grad *= (activation > 0): the gradient through a ReLU.
const RELU_BACK: &str = "@group(0) @binding(1) var<storage, read_write> grad: array<f32>;
@group(0) @binding(2) var<storage, read> act: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  let i = flat(g, n);
  if (i >= dims.rows * dims.cols) { return; }
  grad[i] = select(0.0, grad[i], act[i] > 0.0);
}
";

/// out[c] = sum over rows of src[r][c]: a bias's gradient.
const COLUMN_SUM: &str = "@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  let c = flat(g, n);
  if (c >= dims.cols) { return; }
  var total = 0.0;
  for (var r = 0u; r < dims.rows; r++) { total += src[r * dims.cols + c]; }
  out[c] = total;
}
";

/// One minibatch: rows `index[r]` of x (and their labels) into xb, and
/// transposed into xt.
const GATHER: &str = "@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<u32>;
@group(0) @binding(3) var<storage, read> index: array<u32>;
@group(0) @binding(4) var<storage, read_write> xb: array<f32>;
@group(0) @binding(5) var<storage, read_write> xt: array<f32>;
@group(0) @binding(6) var<storage, read_write> yb: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  let i = flat(g, n);
  if (i >= dims.rows * dims.cols) { return; }
  let r = i / dims.cols;
  let c = i % dims.cols;
  let v = x[index[r] * dims.cols + c];
  xb[i] = v;
  xt[c * dims.rows + r] = v;
  if (c == 0u) { yb[r] = y[index[r]]; }
}
";

/// The compiled shaders, made once per unit.
pub struct Shaders {
    bias: Shader,
    softmax_grad: Shader,
    transpose: Shader,
    relu_back: Shader,
    column_sum: Shader,
    gather: Shader,
}

impl Shaders {
    pub fn new() -> Result<Shaders> {
        let compile = |body: &str| Shader::wgsl(&format!("{DIMS}{body}"));
        Ok(Shaders {
            bias: compile(BIAS)?,
            softmax_grad: compile(SOFTMAX_GRAD)?,
            transpose: compile(TRANSPOSE)?,
            relu_back: compile(RELU_BACK)?,
            column_sum: compile(COLUMN_SUM)?,
            gather: compile(GATHER)?,
        })
    }
}

/// A rows x cols shape, as the buffer every shader reads it from.
pub struct Dims {
    rows: u32,
    cols: u32,
    buffer: Buffer,
}

impl Dims {
    pub fn new(rows: u32, cols: u32) -> Result<Dims> {
        Ok(Dims { rows, cols, buffer: Buffer::from_slice(&[rows, cols, 0, 0])? })
    }

    /// Workgroups for one invocation per element of `count`.
    fn groups(count: u32) -> [u32; 3] {
        let groups = count.div_ceil(WORKGROUP).max(1);
        [groups.min(MAX_GROUPS), groups.div_ceil(MAX_GROUPS), 1]
    }

    fn elements(&self) -> [u32; 3] {
        Self::groups(self.rows * self.cols)
    }
}

/// A zeroed f32 storage buffer of `count` values.
fn floats(count: u32) -> Result<Buffer> {
    Buffer::zeroed(4 * count as u64, Usage::STORAGE)
}

/// The network's weights, on the GPU.
pub struct Net {
    pub features: u32,
    pub hidden: u32,
    pub classes: u32,
    w1: Buffer,
    b1: Buffer,
    w2: Buffer,
    b2: Buffer,
}

impl Net {
    /// A checked model's weights, on the GPU.
    pub fn from_model(model: &Model) -> Result<Net> {
        Ok(Net {
            features: model.features,
            hidden: model.hidden,
            classes: model.classes,
            w1: Buffer::from_slice(&model.w1)?,
            b1: Buffer::from_slice(&model.b1)?,
            w2: Buffer::from_slice(&model.w2)?,
            b2: Buffer::from_slice(&model.b2)?,
        })
    }

    /// The weights, read back.
    pub fn to_model(&self) -> Result<Model> {
        Ok(Model {
            features: self.features,
            hidden: self.hidden,
            classes: self.classes,
            w1: self.w1.read()?,
            b1: self.b1.read()?,
            w2: self.w2.read()?,
            b2: self.b2.read()?,
        })
    }

    /// The class scores (rows x classes) of `rows` rows of `x`, a buffer of
    /// rows x features values.
    pub fn logits(&self, shaders: &Shaders, x: &Buffer, rows: u32) -> Result<Vec<f32>> {
        let (h, c) = (self.hidden, self.classes);
        let hidden = floats(rows * h)?;
        kernels::matmul(rows, h, self.features, x, &self.w1, &hidden)?;
        let rh = Dims::new(rows, h)?;
        shaders.bias.dispatch("bias_relu", &[&rh.buffer, &hidden, &self.b1], rh.elements())?;
        let scores = floats(rows * c)?;
        kernels::matmul(rows, c, h, &hidden, &self.w2, &scores)?;
        let rc = Dims::new(rows, c)?;
        shaders.bias.dispatch("bias", &[&rc.buffer, &scores, &self.b2], rc.elements())?;
        scores.read()
    }

    /// The class of each of `rows` rows of `x` (the first of equal best
    /// scores, as [`crate::model::argmax`] breaks ties on the CPU).
    pub fn classify(&self, shaders: &Shaders, x: &Buffer, rows: u32) -> Result<Vec<usize>> {
        let scores = self.logits(shaders, x, rows)?;
        Ok(scores.chunks_exact(self.classes as usize).map(|row| argmax(&row.iter().map(|&s| s as f64).collect::<Vec<_>>())).collect())
    }
}

/// What one SGD step over a minibatch needs, allocated once per training.
pub struct Trainer<'a> {
    net: &'a Net,
    shaders: &'a Shaders,
    batch: u32,
    x: Buffer,
    y: Buffer,
    index: Buffer,
    xb: Buffer,
    xt: Buffer,
    yb: Buffer,
    act: Buffer,
    act_t: Buffer,
    grad_out: Buffer,
    grad_hidden: Buffer,
    w2_t: Buffer,
    dw1: Buffer,
    db1: Buffer,
    dw2: Buffer,
    db2: Buffer,
    batch_features: Dims,
    batch_hidden: Dims,
    batch_classes: Dims,
    hidden_classes: Dims,
}

impl<'a> Trainer<'a> {
    /// `x` (rows x features) and `y` (rows labels, each below `classes`)
    /// are the training set on the GPU.
    pub fn new(net: &'a Net, shaders: &'a Shaders, x: Buffer, y: Buffer, batch: u32) -> Result<Trainer<'a>> {
        let (f, h, c) = (net.features, net.hidden, net.classes);
        Ok(Trainer {
            net,
            shaders,
            batch,
            x,
            y,
            index: Buffer::zeroed(4 * batch as u64, Usage::STORAGE)?,
            xb: floats(batch * f)?,
            xt: floats(f * batch)?,
            yb: Buffer::zeroed(4 * batch as u64, Usage::STORAGE)?,
            act: floats(batch * h)?,
            act_t: floats(h * batch)?,
            grad_out: floats(batch * c)?,
            grad_hidden: floats(batch * h)?,
            w2_t: floats(c * h)?,
            dw1: floats(f * h)?,
            db1: floats(h)?,
            dw2: floats(h * c)?,
            db2: floats(c)?,
            batch_features: Dims::new(batch, f)?,
            batch_hidden: Dims::new(batch, h)?,
            batch_classes: Dims::new(batch, c)?,
            hidden_classes: Dims::new(h, c)?,
        })
    }

    /// One step of SGD with learning rate `lr` on the training rows `rows`
    /// (exactly `batch` of them): forward, softmax cross-entropy, backward,
    /// update.
    pub fn step(&self, rows: &[u32], lr: f32) -> Result<()> {
        let (s, net) = (self.shaders, self.net);
        let (b, f, h, c) = (self.batch, net.features, net.hidden, net.classes);
        self.index.write(0, rows)?;
        s.gather.dispatch("main", &[&self.batch_features.buffer, &self.x, &self.y, &self.index, &self.xb, &self.xt, &self.yb], self.batch_features.elements())?;
        // Forward: act = relu(xb w1 + b1); grad_out = d loss / d scores.
        kernels::matmul(b, h, f, &self.xb, &net.w1, &self.act)?;
        s.bias.dispatch("bias_relu", &[&self.batch_hidden.buffer, &self.act, &net.b1], self.batch_hidden.elements())?;
        kernels::matmul(b, c, h, &self.act, &net.w2, &self.grad_out)?;
        s.softmax_grad.dispatch("main", &[&self.batch_classes.buffer, &self.grad_out, &net.b2, &self.yb], Dims::groups(b))?;
        // Backward.
        s.transpose.dispatch("main", &[&self.batch_hidden.buffer, &self.act, &self.act_t], self.batch_hidden.elements())?;
        kernels::matmul(h, c, b, &self.act_t, &self.grad_out, &self.dw2)?;
        s.column_sum.dispatch("main", &[&self.batch_classes.buffer, &self.grad_out, &self.db2], Dims::groups(c))?;
        s.transpose.dispatch("main", &[&self.hidden_classes.buffer, &net.w2, &self.w2_t], self.hidden_classes.elements())?;
        kernels::matmul(b, h, c, &self.grad_out, &self.w2_t, &self.grad_hidden)?;
        s.relu_back.dispatch("main", &[&self.batch_hidden.buffer, &self.grad_hidden, &self.act], self.batch_hidden.elements())?;
        kernels::matmul(f, h, b, &self.xt, &self.grad_hidden, &self.dw1)?;
        s.column_sum.dispatch("main", &[&self.batch_hidden.buffer, &self.grad_hidden, &self.db1], Dims::groups(h))?;
        // Update: w -= lr * dw.
        kernels::saxpy(-lr, &self.dw1, &net.w1)?;
        kernels::saxpy(-lr, &self.db1, &net.b1)?;
        kernels::saxpy(-lr, &self.dw2, &net.w2)?;
        kernels::saxpy(-lr, &self.db2, &net.b2)?;
        Ok(())
    }
}
