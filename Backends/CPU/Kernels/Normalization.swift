import Foundation
import LoRAFuse

/// Row-wise kernels over the last axis: softmax, LayerNorm, RMSNorm.
enum NormalizationKernels {
    static func softmax(_ x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, rows: Int, width: Int, threads: Int) {
        parallelFor(rows, threads: threads, minimumChunk: max(1, 8192 / max(width, 1))) { range in
            for row in range {
                softmaxRow(x + row &* width, out + row &* width, width)
            }
        }
    }

    /// Numerically stable softmax of one row (max subtracted first); may work in place.
    @inline(__always)
    static func softmaxRow(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ width: Int) {
        var maximum = -Float.infinity
        for j in 0..<width { maximum = max(maximum, x[j]) }
        if maximum == -.infinity {
            // Every position masked: the reference frameworks give NaN; keep that visible.
            for j in 0..<width { out[j] = .nan }
            return
        }
        // exp(x − max) eight lanes at a time (vectorExp: relative error < 2e-7).
        var sums = SIMD8<Float>(repeating: 0)
        let shift = SIMD8<Float>(repeating: maximum)
        var j = 0
        while j + 8 <= width {
            let e = vectorExp(UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self) - shift)
            UnsafeMutableRawPointer(out + j).storeBytes(of: e, as: SIMD8<Float>.self)
            sums += e
            j += 8
        }
        var sum = sums.sum()
        while j < width {
            let e = exp(x[j] - maximum)
            out[j] = e
            sum += e
            j += 1
        }
        let inverse = 1 / sum
        for j in 0..<width { out[j] *= inverse }
    }

    static func layerNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?,
                          epsilon: Float, out: UnsafeMutablePointer<Float>, rows: Int, width: Int, threads: Int) {
        parallelFor(rows, threads: threads, minimumChunk: max(1, 8192 / max(width, 1))) { range in
            for row in range {
                let input = x + row &* width, output = out + row &* width
                // Two passes (mean, then centred variance) keep float32 accurate for rows
                // with a large mean, where E[x²] − E[x]² would cancel.
                var sum: Float = 0
                for j in 0..<width { sum += input[j] }
                let mean = sum / Float(width)
                var squares: Float = 0
                for j in 0..<width { let d = input[j] - mean; squares += d * d }
                let inverse = 1 / (squares / Float(width) + epsilon).squareRoot()
                if let weight, let bias {
                    for j in 0..<width { output[j] = (input[j] - mean) * inverse * weight[j] + bias[j] }
                } else {
                    for j in 0..<width { output[j] = (input[j] - mean) * inverse }
                }
            }
        }
    }

    static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>?, epsilon: Float,
                        out: UnsafeMutablePointer<Float>, rows: Int, width: Int, threads: Int) {
        parallelFor(rows, threads: threads, minimumChunk: max(1, 8192 / max(width, 1))) { range in
            for row in range {
                let input = x + row &* width, output = out + row &* width
                var squares: Float = 0
                for j in 0..<width { squares += input[j] * input[j] }
                let inverse = 1 / (squares / Float(width) + epsilon).squareRoot()
                if let weight {
                    for j in 0..<width { output[j] = input[j] * inverse * weight[j] }
                } else {
                    for j in 0..<width { output[j] = input[j] * inverse }
                }
            }
        }
    }
}
