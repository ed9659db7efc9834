// MobileNetV3 Studio's CUDA kernels: the GPU side of the graph's fused ops (src/exec/graph/ops.rs), with the
// same arithmetic as the CPU kernels in src/kernels/ (depthwise.rs, batchnorm.rs) and the SGD ops of
// src/train/optim.rs. build.rs compiles this file to PTX with nvcc; src/kernels/cuda.rs launches it.
//
// Layouts are candle's contiguous row-major ones: activations (n, c, h, w), depthwise filters (c, 1, k, k).
// Reductions (filter gradients, BatchNorm sums) run one block per channel in a fixed order, so results are
// deterministic run to run; their partial sums are in double, as the CPU kernels' are.

#define ACT_NONE 0
#define ACT_RELU 1
#define ACT_HARD_SWISH 2

// Depthwise filters up to 5x5 (MobileNetV3 uses 3x3 and 5x5); the host refuses larger ones.
#define MAX_TAPS 25
#define BLOCK 256

__device__ __forceinline__ float act_apply(int act, float z) {
    if (act == ACT_RELU) return fmaxf(z, 0.0f);
    if (act == ACT_HARD_SWISH) return z * fminf(fmaxf(z + 3.0f, 0.0f), 6.0f) * (1.0f / 6.0f);
    return z;
}

// d act / d z with PyTorch's conventions at the kinks (as kernels::Act::derivative).
__device__ __forceinline__ float act_derivative(int act, float z) {
    if (act == ACT_RELU) return z > 0.0f ? 1.0f : 0.0f;
    if (act == ACT_HARD_SWISH) {
        if (z < -3.0f) return 0.0f;
        if (z > 3.0f) return 1.0f;
        return (2.0f * z + 3.0f) * (1.0f / 6.0f);
    }
    return 1.0f;
}

// Sums `v` over the block; every thread gets the total. `scratch` holds BLOCK doubles.
__device__ double block_sum(double v, double* scratch) {
    scratch[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) scratch[threadIdx.x] += scratch[threadIdx.x + s];
        __syncthreads();
    }
    double total = scratch[0];
    __syncthreads();
    return total;
}

// ---- depthwise convolution ------------------------------------------------------------------------------

// y[n, c, oy, ox] = sum over taps of x[n, c, oy*stride - pad + ky, ox*stride - pad + kx] * w[c, ky, kx].
extern "C" __global__ void dw_forward(const float* __restrict__ x, const float* __restrict__ w,
                                      float* __restrict__ y, int n, int c, int h, int wd, int k, int stride,
                                      int pad, int oh, int ow) {
    long long total = (long long)n * c * oh * ow;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        int ox = (int)(i % ow);
        int oy = (int)((i / ow) % oh);
        long long plane = i / ((long long)oh * ow);
        int ch = (int)(plane % c);
        const float* xp = x + plane * h * wd;
        const float* wp = w + ch * k * k;
        float acc = 0.0f;
        for (int ky = 0; ky < k; ky++) {
            int iy = oy * stride - pad + ky;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < k; kx++) {
                int ix = ox * stride - pad + kx;
                if (ix < 0 || ix >= wd) continue;
                acc += xp[iy * wd + ix] * wp[ky * k + kx];
            }
        }
        y[i] = acc;
    }
}

// dx[n, c, iy, ix] = sum over the outputs that read (iy, ix) of gy * the tap that read it.
extern "C" __global__ void dw_input_grad(const float* __restrict__ gy, const float* __restrict__ w,
                                         float* __restrict__ dx, int n, int c, int h, int wd, int k, int stride,
                                         int pad, int oh, int ow) {
    long long total = (long long)n * c * h * wd;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        int ix = (int)(i % wd);
        int iy = (int)((i / wd) % h);
        long long plane = i / ((long long)h * wd);
        int ch = (int)(plane % c);
        const float* gp = gy + plane * oh * ow;
        const float* wp = w + ch * k * k;
        float acc = 0.0f;
        for (int ky = 0; ky < k; ky++) {
            int ty = iy + pad - ky;
            if (ty < 0 || ty % stride != 0) continue;
            int oy = ty / stride;
            if (oy >= oh) continue;
            for (int kx = 0; kx < k; kx++) {
                int tx = ix + pad - kx;
                if (tx < 0 || tx % stride != 0) continue;
                int ox = tx / stride;
                if (ox >= ow) continue;
                acc += gp[oy * ow + ox] * wp[ky * k + kx];
            }
        }
        dx[i] = acc;
    }
}

// dw[c, ky, kx] = sum over images and outputs of gy * the input the tap read. One block per channel; each
// thread keeps the k*k partial sums of its share of the outputs, then the block adds them up tap by tap.
extern "C" __global__ void __launch_bounds__(BLOCK) dw_weight_grad(const float* __restrict__ x,
                                                                  const float* __restrict__ gy,
                                                                  float* __restrict__ dw, int n, int c, int h,
                                                                  int wd, int k, int stride, int pad, int oh,
                                                                  int ow) {
    __shared__ double scratch[BLOCK];
    int ch = blockIdx.x;
    double acc[MAX_TAPS];
#pragma unroll
    for (int t = 0; t < MAX_TAPS; t++) acc[t] = 0.0;
    long long per_image = (long long)oh * ow;
    long long total = (long long)n * per_image;
    for (long long e = threadIdx.x; e < total; e += blockDim.x) {
        int img = (int)(e / per_image);
        int rest = (int)(e % per_image);
        int oy = rest / ow, ox = rest % ow;
        long long plane = (long long)img * c + ch;
        float g = gy[plane * per_image + rest];
        const float* xp = x + plane * h * wd;
#pragma unroll
        for (int t = 0; t < MAX_TAPS; t++) {
            int ky = t / 5, kx = t % 5;  // taps laid out on a 5x5 grid; those outside k x k stay zero
            if (ky >= k || kx >= k) continue;
            int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
            if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
            acc[t] += (double)(g * xp[iy * wd + ix]);
        }
    }
#pragma unroll
    for (int t = 0; t < MAX_TAPS; t++) {
        int ky = t / 5, kx = t % 5;
        if (ky >= k || kx >= k) continue;  // the same for every thread: no divergent __syncthreads
        double s = block_sum(acc[t], scratch);
        if (threadIdx.x == 0) dw[ch * k * k + ky * k + kx] = (float)s;
    }
}

// ---- BatchNorm -------------------------------------------------------------------------------------------

// Per channel over (n, h, w): stats[ch] = mean, stats[c + ch] = biased variance, stats[2c + ch] = 1/sqrt(var + eps).
// Two passes (mean, then squared deviations), one block per channel.
extern "C" __global__ void __launch_bounds__(BLOCK) bn_stats(const float* __restrict__ x, float* __restrict__ stats,
                                                            int n, int c, int hw, float eps) {
    __shared__ double scratch[BLOCK];
    int ch = blockIdx.x;
    long long count = (long long)n * hw;
    double s = 0.0;
    for (long long e = threadIdx.x; e < count; e += blockDim.x) {
        long long img = e / hw, at = e % hw;
        s += x[(img * c + ch) * hw + at];
    }
    double mean = block_sum(s, scratch) / (double)count;
    double q = 0.0;
    for (long long e = threadIdx.x; e < count; e += blockDim.x) {
        long long img = e / hw, at = e % hw;
        double d = x[(img * c + ch) * hw + at] - mean;
        q += d * d;
    }
    double var = block_sum(q, scratch) / (double)count;
    if (threadIdx.x == 0) {
        float v = (float)var;
        stats[ch] = (float)mean;
        stats[c + ch] = v;
        stats[2 * c + ch] = 1.0f / sqrtf(v + eps);
    }
}

// Training forward, second half: y = act((x - mean) * inv_std * gamma + beta), as scale/shift like the CPU.
extern "C" __global__ void bn_apply(const float* __restrict__ x, const float* __restrict__ stats,
                                    const float* __restrict__ gamma, const float* __restrict__ beta,
                                    float* __restrict__ y, long long total, int c, int hw, int act) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        int ch = (int)((i / hw) % c);
        float scale = gamma[ch] * stats[2 * c + ch];
        float shift = beta[ch] - stats[ch] * scale;
        y[i] = act_apply(act, x[i] * scale + shift);
    }
}

// Evaluation: y = act(x * scale[c] + shift[c]).
extern "C" __global__ void affine_act(const float* __restrict__ x, const float* __restrict__ scale,
                                      const float* __restrict__ shift, float* __restrict__ y, long long total,
                                      int c, int hw, int act) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        int ch = (int)((i / hw) % c);
        y[i] = act_apply(act, x[i] * scale[ch] + shift[ch]);
    }
}

// Backward, first pass: per channel, sums[ch] = sum dz and sums[c + ch] = sum dz * x_hat, where
// x_hat = (x - mean) * inv_std and dz = dy * act'(x_hat * gamma + beta). They are dbeta and dgamma.
extern "C" __global__ void __launch_bounds__(BLOCK) bn_backward_sums(const float* __restrict__ x,
                                                                    const float* __restrict__ dy,
                                                                    const float* __restrict__ stats,
                                                                    const float* __restrict__ gamma,
                                                                    const float* __restrict__ beta,
                                                                    float* __restrict__ sums, int n, int c, int hw,
                                                                    int act) {
    __shared__ double scratch[BLOCK];
    int ch = blockIdx.x;
    float m = stats[ch], is = stats[2 * c + ch], g = gamma[ch], b = beta[ch];
    long long count = (long long)n * hw;
    double sdz = 0.0, sdzx = 0.0;
    for (long long e = threadIdx.x; e < count; e += blockDim.x) {
        long long img = e / hw, at = e % hw;
        long long idx = (img * c + ch) * hw + at;
        float xh = (x[idx] - m) * is;
        float dz = dy[idx] * act_derivative(act, xh * g + b);
        sdz += dz;
        sdzx += (double)(dz * xh);
    }
    double t1 = block_sum(sdz, scratch);
    double t2 = block_sum(sdzx, scratch);
    if (threadIdx.x == 0) {
        sums[ch] = (float)t1;
        sums[c + ch] = (float)t2;
    }
}

// Backward, second pass: dx = gamma * inv_std * (dz - mean(dz) - x_hat * mean(dz * x_hat)).
extern "C" __global__ void bn_input_grad(const float* __restrict__ x, const float* __restrict__ dy,
                                         const float* __restrict__ stats, const float* __restrict__ gamma,
                                         const float* __restrict__ beta, const float* __restrict__ sums,
                                         float* __restrict__ dx, long long total, int n, int c, int hw, int act) {
    float inv_count = 1.0f / (float)((long long)n * hw);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        int ch = (int)((i / hw) % c);
        float m = stats[ch], is = stats[2 * c + ch], g = gamma[ch], b = beta[ch];
        float xh = (x[i] - m) * is;
        float dz = dy[i] * act_derivative(act, xh * g + b);
        dx[i] = g * is * (dz - sums[ch] * inv_count - xh * (sums[c + ch] * inv_count));
    }
}

// ---- SGD with momentum (in place, as train::optim's CPU ops) ----------------------------------------------

// buf = momentum * buf + (g + weight_decay * p)
extern "C" __global__ void sgd_momentum(float* __restrict__ buf, const float* __restrict__ g,
                                        const float* __restrict__ p, long long len, float momentum,
                                        float weight_decay) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
         i += (long long)gridDim.x * blockDim.x) {
        buf[i] = buf[i] * momentum + (g[i] + p[i] * weight_decay);
    }
}

// p -= lr * (nesterov ? (g + weight_decay * p) + momentum * buf : buf)
extern "C" __global__ void sgd_update(float* __restrict__ p, const float* __restrict__ buf,
                                      const float* __restrict__ g, long long len, float lr, float momentum,
                                      float weight_decay, int nesterov) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
         i += (long long)gridDim.x * blockDim.x) {
        float update = nesterov ? (g[i] + p[i] * weight_decay) + buf[i] * momentum : buf[i];
        p[i] -= update * lr;
    }
}
