// Generated from Shaders/kernels.json by Tools/shaders/compile-shaders.sh. Do not edit.
// The same tables are Swift enums in Backends/Vulkan/Sources/Generated/VulkanKernel.swift.

// Element type of a buffer read by convert.comp and the weight loaders.
const uint DTYPE_F32 = 0u;
const uint DTYPE_F16 = 1u;
const uint DTYPE_BF16 = 2u;
const uint DTYPE_I32 = 3u;
const uint DTYPE_I64 = 4u;
const uint DTYPE_F8E4M3 = 5u;
const uint DTYPE_F8E5M2 = 6u;

// binary.comp's operator.
const uint BINARY_ADD = 0u;
const uint BINARY_SUB = 1u;
const uint BINARY_MUL = 2u;
const uint BINARY_DIV = 3u;

// unary.comp's function; scale multiplies by the factor.
const uint UNARY_GELU = 0u;
const uint UNARY_GELU_TANH = 1u;
const uint UNARY_QUICK_GELU = 2u;
const uint UNARY_SILU = 3u;
const uint UNARY_SIGMOID = 4u;
const uint UNARY_RELU = 5u;
const uint UNARY_TANH = 6u;
const uint UNARY_SCALE = 7u;

// rowwise.comp's mode.
const uint ROWWISE_SOFTMAX = 0u;
const uint ROWWISE_LAYER_NORM = 1u;
const uint ROWWISE_RMS_NORM = 2u;

// convert.comp's mode: gather rows by id, widen to F32, narrow F32 to F16 or BF16.
const uint CONVERT_GATHER = 0u;
const uint CONVERT_WIDEN = 1u;
const uint CONVERT_NARROW_F16 = 2u;
const uint CONVERT_NARROW_BF16 = 3u;

// topk_control.comp's step: clear the histogram, select the bin after a pass, add the partial sums.
const uint TOPK_CONTROL_CLEAR = 0u;
const uint TOPK_CONTROL_SELECT = 1u;
const uint TOPK_CONTROL_FINISH = 2u;
