import LoRAFuse
import LoRAFuseCPUKernels

/// Dequantization of GGUF block rows for the matmul's packing: AVX-512 routines where the CPU
/// has them (Backends/CPUKernels/dequantize_avx512.c), else the portable per-block routines
/// of `GGMLType`; both give the `gguf` package's values bit for bit.
enum QuantizedRows {
    static let vectorised = GemmKernel.hasAVX512

    /// Widens `count` values (whole blocks) of `dtype` at `source` into `output`.
    @inline(__always)
    static func dequantize(_ source: UnsafeRawPointer, dtype: DType, count: Int, into output: UnsafeMutablePointer<Float>,
                           vectorised: Bool = vectorised) {
        let format = dtype.blockFormat!
        if vectorised, lf_dequantize_blocks_avx512(Int32(format.rawValue), source, count / format.blockElements, output) != 0 { return }
        format.dequantize(source, count: count, into: output)
    }
}
