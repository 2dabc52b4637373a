// The Python bindings of qkv's compiled CPU kernels (matvec.cpp, gelu.cpp, dropout.cpp, attention.cpp,
// smoothed_loss.cpp, screened_argmax.cpp, integer_scores.cpp, draft_matvec.cpp, few_rows.cpp, layer_norm.cpp, bias_relu.cpp,
// dropout_layer_norm.cpp); qkv/nn/native.py builds and loads them.

#include <torch/extension.h>

at::Tensor matvec(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias);
at::Tensor gelu_tanh(const at::Tensor& x);
at::Tensor gelu_tanh_backward(const at::Tensor& grad, const at::Tensor& x);
at::Tensor dropout_apply(const at::Tensor& x, double p, int64_t seed);
std::vector<at::Tensor> smoothed_loss_forward(const at::Tensor& z, const at::Tensor& target, double eps, int64_t ignore);
at::Tensor smoothed_loss_backward(const at::Tensor& z, const at::Tensor& target, const at::Tensor& lse, double eps,
                                  int64_t ignore, double grad, bool in_place);
at::Tensor smoothed_loss_with_gradient(const at::Tensor& z, const at::Tensor& target, double eps, int64_t ignore);
std::vector<at::Tensor> attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                          const c10::optional<at::Tensor>& mask, bool causal, double scale);
std::vector<at::Tensor> attention_backward(const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
                                           const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                           const c10::optional<at::Tensor>& mask, bool causal, double scale,
                                           const c10::optional<at::Tensor>& dq_into,
                                           const c10::optional<at::Tensor>& dk_into,
                                           const c10::optional<at::Tensor>& dv_into);
std::vector<at::Tensor> quantize_rows(const at::Tensor& x);
std::tuple<at::Tensor, double, double> quantize_weight(const at::Tensor& weight);
at::Tensor int8_matvec(const at::Tensor& q, const at::Tensor& p);
at::Tensor few_rows(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias);
at::Tensor draft_matvec(const at::Tensor& x, const at::Tensor& p, const at::Tensor& scale,
                        const c10::optional<at::Tensor>& bias);
at::Tensor add_layer_norm(const at::Tensor& x, const c10::optional<at::Tensor>& y, const at::Tensor& weight,
                          const at::Tensor& bias, double eps);
at::Tensor screened_argmax(const at::Tensor& acc, const at::Tensor& q, const at::Tensor& scale, const at::Tensor& x,
                           const at::Tensor& weight, const c10::optional<at::Tensor>& bias, double w_scale,
                           double w_l1);
at::Tensor bias_relu_(at::Tensor y, const at::Tensor& bias);
std::vector<at::Tensor> dropout_layer_norm_forward(const at::Tensor& y, const at::Tensor& skip,
                                                   const c10::optional<at::Tensor>& y_bias, const at::Tensor& weight,
                                                   const at::Tensor& bias, double p, int64_t seed, double eps);
std::vector<at::Tensor> dropout_layer_norm_backward(const at::Tensor& grad, const at::Tensor& s, const at::Tensor& mean,
                                                    const at::Tensor& rstd, const at::Tensor& weight, double p,
                                                    int64_t seed, bool with_y_bias);
std::vector<at::Tensor> relu_bias_backward(const at::Tensor& grad, const at::Tensor& y);

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
  m.def("dropout", &dropout_apply, "x * keep / (1 - p) with keep drawn from (seed, index); the same call masks the gradient");
  m.def("attention_forward", &attention_forward, "softmax(scale Q K^T) V for short sequences -> [out, lse] (float32, CPU)");
  m.def("attention_backward", &attention_backward,
        "the gradients of attention_forward -> [dq, dk, dv], written into the last three arguments where given");
  m.def("smoothed_loss_forward", &smoothed_loss_forward, "label-smoothed cross-entropy, summed -> [loss, lse]");
  m.def("smoothed_loss_with_gradient", &smoothed_loss_with_gradient,
        "the summed loss, with the scores' gradient (for an incoming 1) written over them in the same pass");
  m.def("smoothed_loss_backward", &smoothed_loss_backward, "its gradient with respect to the scores, new or written over them");
  m.def("quantize_rows", &quantize_rows, "x (R, D) -> [q (R, D) int8, scale (R,)] with x ~ scale q, row by row");
  m.def("quantize_weight", &quantize_weight, "weight (V, D) -> (p (V, D) int8, t, l1): weight ~ t p, and its largest row |w|_1");
  m.def("int8_matvec", &int8_matvec, "q (R, D) int8, p (V, D) int8 -> (R, V) int32 q p^T, exactly");
  m.def("few_rows", &few_rows, "y = x W^T + b for 1 to 16 rows x against a large weight (float32, CPU)");
  m.def("draft_matvec", &draft_matvec, "x (..., in) one float32 row, p (out, in) int8, scale (out,), bias -> scale (p x) + b");
  m.def("screened_argmax", &screened_argmax, "each row's argmax of x W^T + b from 8-bit integer scores and their error bound");
  m.def("add_layer_norm", &add_layer_norm, "LayerNorm(x + y), or LayerNorm(x) with y None, over the last dimension (float32, CPU)");
  m.def("bias_relu_", &bias_relu_, "y <- max(y + bias, 0) in place, y (N, F) contiguous float32");
  m.def("relu_bias_backward", &relu_bias_backward, "(grad, y) -> [grad where y > 0, its column sums]");
  m.def("dropout_layer_norm_forward", &dropout_layer_norm_forward,
        "LayerNorm(skip + dropout(y + y_bias)) -> [out, skip + dropout(y + y_bias), mean, rstd] (float32, CPU, training; y_bias may be None)");
  m.def("dropout_layer_norm_backward", &dropout_layer_norm_backward,
        "its gradients -> [d skip, d y, d weight, d bias], then d y_bias if asked");
  m.def("uses_openmp", &uses_openmp, "whether the kernels split their work across PyTorch's threads");
}
