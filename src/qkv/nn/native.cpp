// The Python bindings of qkv's compiled CPU kernels (matvec.cpp, gelu.cpp); qkv/nn/native.py builds
// and loads them.

#include <torch/extension.h>

at::Tensor matvec(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias);
at::Tensor gelu_tanh(const at::Tensor& x);
at::Tensor gelu_tanh_backward(const at::Tensor& grad, const at::Tensor& x);

// Whether at::parallel_for can use more than one thread here (the build must have had -fopenmp).
bool uses_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("matvec", &matvec, "y = W x + b for a single input row (float32, CPU)");
  m.def("gelu_tanh", &gelu_tanh, "GPT-2's GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (float32, CPU)");
  m.def("gelu_tanh_backward", &gelu_tanh_backward, "the gradient of gelu_tanh: (grad, x) -> grad * gelu_tanh'(x)");
  m.def("uses_openmp", &uses_openmp, "whether the kernels split their work across PyTorch's threads");
}
