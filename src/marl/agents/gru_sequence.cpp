// A PyTorch-layout GRU (gates r, z, n; "linear before reset") over a whole sequence, forward and
// backward, for the CPU. See gru_sequence.py for why this exists and how it is checked against
// nn.GRU.
//
// Per step: gi = x W_ih^T, gh = h W_hh^T; r, z = sigmoid(gi_rz + gh_rz + b_ih_rz + b_hh_rz);
// n = tanh(gi_n + b_ih_n + r * (gh_n + b_hh_n)); h' = n + z (h - n).
//
// Time runs in chunks of ~512 rows (C steps x N sequences): the input projection of a chunk is one
// matmul into a buffer that stays in the L2 cache, instead of one [T*N, 3H] tensor that goes out
// to memory and back; the backward likewise turns each chunk's gate gradients into dx, dW_ih and
// dW_hh with three matmuls. Inside a chunk each step does one small matmul (h W_hh^T, or dh W_hh
// going back) and fused elementwise loops. Biases are added in those loops (addmm's bias costs a
// broadcast copy), and their gradients are summed there too.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

// Runtime dispatch to the widest vector unit present, so that one build is safe on every node
// of a heterogeneous cluster (a shared ~/.cache must not hold an AVX-512-only binary). Other
// architectures get the compiler's baseline vectorisation.
#if defined(__x86_64__) && defined(__GNUC__)
#define MARL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MARL_CLONES
#endif
#define R __restrict__

// exp(x) as Cephes' expf (range reduction by ln 2, degree-6 polynomial, ~1 ulp), written so that
// the compiler vectorises the loops that call it: ATen's sigmoid called per step costs more in
// dispatch than in arithmetic at these sizes.
__attribute__((always_inline)) inline float exp_approx(float x) {
  x = x < -87.3f ? -87.3f : x;  // ternaries (with -fno-trapping-math) vectorise; fmin does not
  x = x > 88.3f ? 88.3f : x;
  const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * __builtin_bit_cast(float, (static_cast<int32_t>(k) + 127) << 23);
}

__attribute__((always_inline)) inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

// One step for all rows: gates from gi (this step's input projection), gh = h W_hh^T and the
// biases; stores r, z, n and gh_n + b_hh_n for the backward, and h' into out.
MARL_CLONES void step(const float* R gi, const float* R gh, const float* R b, const float* R h,
                      float* R rz, float* R n, float* R ghn, float* R out, int64_t rows, int64_t H) {
  const float* R b_rz = b;         // b_ih + b_hh of r, z
  const float* R bi = b + 2 * H;   // b_ih of n
  const float* R bh = b + 3 * H;   // b_hh of n
  for (int64_t i = 0; i < rows; ++i) {
    const float* R g = gi + i * 3 * H;
    const float* R q = gh + i * 3 * H;
    const float* R hp = h + i * H;
    float* R r_ = rz + i * 2 * H;
    float* R z_ = r_ + H;
    float* R n_ = n + i * H;
    float* R s_ = ghn + i * H;
    float* R o = out + i * H;
    for (int64_t j = 0; j < H; ++j) {
      const float r = sigmoid(g[j] + q[j] + b_rz[j]);
      const float z = sigmoid(g[H + j] + q[H + j] + b_rz[H + j]);
      const float qb = q[2 * H + j] + bh[j];
      const float v = 2.0f * sigmoid(2.0f * (g[2 * H + j] + bi[j] + r * qb)) - 1.0f;  // tanh
      r_[j] = r;
      z_[j] = z;
      n_[j] = v;
      s_[j] = qb;
      o[j] = v + z * (hp[j] - v);
    }
  }
}

// The gradient reaching h_t is dh (from h_{t+1} through W_hh) + dd (from h_{t+1} directly,
// written by the previous call) + dout_t. From it, the gate pre-activation gradients of step t,
// and the new direct part dd = d * z (in place: each element is read before it is written).
// db_ih and db_hh [3H] accumulate the column sums of dgi and dgh.
MARL_CLONES void gate_grads(const float* R dh, float* R dd, const float* R dout, const float* R rz,
                            const float* R n, const float* R ghn, const float* R hp, float* R dgi,
                            float* R dgh, float* R db_ih, float* R db_hh, int64_t rows, int64_t H) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* R r = rz + i * 2 * H;
    const float* R z = r + H;
    const float* R nn = n + i * H;
    const float* R q = ghn + i * H;
    const float* R h = hp + i * H;
    const float* R d0 = dh + i * H;
    const float* R d1 = dout + i * H;
    float* R d2 = dd + i * H;
    float* R gi = dgi + i * 3 * H;
    float* R gh = dgh + i * 3 * H;
    for (int64_t j = 0; j < H; ++j) {
      const float d = d0[j] + d1[j] + d2[j];
      const float dn = d * (1.0f - z[j]);
      const float dz = d * (h[j] - nn[j]);
      const float dan = dn * (1.0f - nn[j] * nn[j]);
      const float dar = dan * q[j] * r[j] * (1.0f - r[j]);
      const float daz = dz * z[j] * (1.0f - z[j]);
      gi[j] = dar;
      gi[H + j] = daz;
      gi[2 * H + j] = dan;
      gh[j] = dar;
      gh[H + j] = daz;
      gh[2 * H + j] = dan * r[j];
      d2[j] = d * z[j];
      db_ih[j] += dar;
      db_ih[H + j] += daz;
      db_ih[2 * H + j] += dan;
      db_hh[j] += dar;
      db_hh[H + j] += daz;
      db_hh[2 * H + j] += dan * r[j];
    }
  }
}

void check(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == torch::kFloat32, name, " must be float32");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

int64_t chunk_steps(int64_t N) { return std::max<int64_t>(1, 512 / std::max<int64_t>(N, 1)); }

}  // namespace

// x [T, N, I], h0 [N, H], w_ih [3H, I], w_hh [3H, H], b [4H] = [b_ih_rz + b_hh_rz, b_ih_n, b_hh_n].
// Returns out [T, N, H] and what the backward needs: rz [T, N, 2H], n [T, N, H], ghn [T, N, H].
// Without `save` (a no-grad pass, e.g. the target network) those three are one step's scratch.
std::vector<torch::Tensor> forward(torch::Tensor x, torch::Tensor h0, torch::Tensor w_ih,
                                   torch::Tensor w_hh, torch::Tensor b, bool save) {
  check(x, "x");
  check(h0, "h0");
  check(w_ih, "w_ih");
  check(w_hh, "w_hh");
  check(b, "b");
  const int64_t T = x.size(0), N = x.size(1), I = x.size(2), H = h0.size(1);
  TORCH_CHECK(w_ih.size(0) == 3 * H && w_ih.size(1) == I && w_hh.size(0) == 3 * H &&
                  w_hh.size(1) == H && b.numel() == 4 * H && h0.size(0) == N,
              "GRU shapes do not match");
  const auto opts = x.options();
  const int64_t C = chunk_steps(N), kept = save ? T : 1;
  auto out = torch::empty({T, N, H}, opts);
  auto rz = torch::empty({kept, N, 2 * H}, opts);
  auto n = torch::empty({kept, N, H}, opts);
  auto ghn = torch::empty({kept, N, H}, opts);
  auto gi = torch::empty({C * N, 3 * H}, opts);
  auto gh = torch::empty({N, 3 * H}, opts);
  const auto w_ih_t = w_ih.t(), w_hh_t = w_hh.t();
  const float* bp = b.data_ptr<float>();
  float *gip = gi.data_ptr<float>(), *ghp = gh.data_ptr<float>(), *rzp = rz.data_ptr<float>();
  float *np = n.data_ptr<float>(), *ghnp = ghn.data_ptr<float>(), *outp = out.data_ptr<float>();
  const int64_t s1 = N * H, s2 = 2 * N * H, s3 = 3 * N * H;
  for (int64_t c0 = 0; c0 < T; c0 += C) {
    const int64_t len = std::min(C, T - c0);
    auto gi_c = gi.narrow(0, 0, len * N);
    at::mm_out(gi_c, x.narrow(0, c0, len).reshape({len * N, I}), w_ih_t);
    for (int64_t t = c0; t < c0 + len; ++t) {
      const int64_t k = save ? t : 0;  // slot of rz, n, ghn
      const float* git = gip + (t - c0) * s3;
      at::mm_out(gh, t > 0 ? out[t - 1] : h0, w_hh_t);
      step(git, ghp, bp, t > 0 ? outp + (t - 1) * s1 : h0.data_ptr<float>(), rzp + k * s2,
           np + k * s1, ghnp + k * s1, outp + t * s1, N, H);
    }
  }
  return {out, rz, n, ghn};
}

// Returns dx [T, N, I], dh0 [N, H], dw_ih [3H, I], dw_hh [3H, H], db_ih [3H], db_hh [3H].
std::vector<torch::Tensor> backward(torch::Tensor dout, torch::Tensor x, torch::Tensor h0,
                                    torch::Tensor w_ih, torch::Tensor w_hh, torch::Tensor out,
                                    torch::Tensor rz, torch::Tensor n, torch::Tensor ghn) {
  check(dout, "dout");
  const int64_t T = x.size(0), N = x.size(1), I = x.size(2), H = h0.size(1);
  const auto opts = x.options();
  const int64_t C = chunk_steps(N);
  auto dx = torch::empty({T, N, I}, opts);
  auto dw_ih = torch::zeros({3 * H, I}, opts);
  auto dw_hh = torch::zeros({3 * H, H}, opts);
  auto db_ih = torch::zeros({3 * H}, opts);
  auto db_hh = torch::zeros({3 * H}, opts);
  auto dgi = torch::empty({C * N, 3 * H}, opts);
  auto dgh = torch::empty({C * N, 3 * H}, opts);
  auto dh = torch::zeros({N, H}, opts);
  auto dd = torch::zeros({N, H}, opts);
  const float *doutp = dout.data_ptr<float>(), *rzp = rz.data_ptr<float>();
  const float *np = n.data_ptr<float>(), *ghnp = ghn.data_ptr<float>(), *outp = out.data_ptr<float>();
  float *dgip = dgi.data_ptr<float>(), *dghp = dgh.data_ptr<float>();
  const int64_t s1 = N * H, s2 = 2 * N * H, s3 = 3 * N * H;
  const int64_t last = ((T - 1) / C) * C;
  for (int64_t c0 = last; c0 >= 0; c0 -= C) {
    const int64_t len = std::min(C, T - c0);
    for (int64_t t = c0 + len - 1; t >= c0; --t) {
      const float* hp = t > 0 ? outp + (t - 1) * s1 : h0.data_ptr<float>();
      const int64_t row = (t - c0) * N;
      gate_grads(dh.data_ptr<float>(), dd.data_ptr<float>(), doutp + t * s1, rzp + t * s2,
                 np + t * s1, ghnp + t * s1, hp, dgip + (t - c0) * s3, dghp + (t - c0) * s3,
                 db_ih.data_ptr<float>(), db_hh.data_ptr<float>(), N, H);
      at::mm_out(dh, dgh.narrow(0, row, N), w_hh);
    }
    auto dgi_c = dgi.narrow(0, 0, len * N), dgh_c = dgh.narrow(0, 0, len * N);
    auto dx_c = dx.narrow(0, c0, len).view({len * N, I});
    at::mm_out(dx_c, dgi_c, w_ih);
    dw_ih.addmm_(dgi_c.t(), x.narrow(0, c0, len).reshape({len * N, I}));
    if (c0 > 0) {  // h_{t-1} of the chunk's steps: out[c0-1 .. c0+len-2]
      dw_hh.addmm_(dgh_c.t(), out.narrow(0, c0 - 1, len).reshape({len * N, H}));
    } else {  // step 0 starts from h0
      dw_hh.addmm_(dgh.narrow(0, 0, N).t(), h0);
      if (len > 1)
        dw_hh.addmm_(dgh.narrow(0, N, (len - 1) * N).t(),
                     out.narrow(0, 0, len - 1).reshape({(len - 1) * N, H}));
    }
  }
  return {dx, dh.add_(dd), dw_ih, dw_hh, db_ih, db_hh};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // Without the GIL, like ATen's own ops: the learner may run the target pass in another thread.
  m.def("forward", &forward, "GRU over a sequence (forward)",
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("backward", &backward, "GRU over a sequence (backward)",
        pybind11::call_guard<pybind11::gil_scoped_release>());
}
