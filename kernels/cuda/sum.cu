// sum: out[0] = sum of input[0..n), in two launches with the shape of the
// WGSL kernel (kernels/wgsl/sum.wgsl):
//   sum_partial<<<groups, SUM_BLOCK>>>(input, partials, n)  one partial per block
//   sum_finish<<<1, SUM_BLOCK>>>(partials, out, groups)     the partials to out[0]
// Both reduce a grid-strided per-thread sum through shared memory as a tree.
#define SUM_BLOCK 256

__device__ float block_sum(float acc) {
    __shared__ float lane[SUM_BLOCK];
    lane[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned int half = SUM_BLOCK / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) {
            lane[threadIdx.x] += lane[threadIdx.x + half];
        }
        __syncthreads();
    }
    return lane[0];
}

extern "C" __global__ void sum_partial(const float* input, float* partials, unsigned int n) {
    float acc = 0.0f;
    for (unsigned int i = blockIdx.x * SUM_BLOCK + threadIdx.x; i < n; i += SUM_BLOCK * gridDim.x) {
        acc += input[i];
    }
    float total = block_sum(acc);
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = total;
    }
}

extern "C" __global__ void sum_finish(const float* partials, float* out, unsigned int count) {
    float acc = 0.0f;
    for (unsigned int i = threadIdx.x; i < count; i += SUM_BLOCK) {
        acc += partials[i];
    }
    float total = block_sum(acc);
    if (threadIdx.x == 0) {
        out[0] = total;
    }
}
