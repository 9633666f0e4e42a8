// saxpy: y[i] = a * x[i] + y[i] over n elements.
// Launch: any grid of SAXPY_BLOCK-thread blocks; the loop is grid-strided,
// so one launch covers every n. x and y may be the same buffer.
extern "C" __global__ void saxpy(float a, const float* x, float* y, unsigned int n) {
    unsigned int stride = blockDim.x * gridDim.x;
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        y[i] = a * x[i] + y[i];
    }
}
