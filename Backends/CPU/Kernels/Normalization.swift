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
        let inverse = exponentiateRow(x, out, width, scale: 1)
        var j = 0
        let inverse8 = SIMD8<Float>(repeating: inverse)
        while j + 8 <= width {
            let value = UnsafeRawPointer(out + j).loadUnaligned(as: SIMD8<Float>.self) * inverse8
            UnsafeMutableRawPointer(out + j).storeBytes(of: value, as: SIMD8<Float>.self)
            j += 8
        }
        while j < width { out[j] *= inverse; j += 1 }
    }

    /// The unnormalised softmax of `scale · x` (scale > 0): out = exp(scale·(x − max x)),
    /// returning 1 / Σ out, so a caller can fold the division into a later, smaller pass
    /// (attention scales each output row instead of every score). A row with no finite
    /// entry gives NaN, as the reference frameworks do.
    @inline(__always)
    static func exponentiateRow(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ width: Int, scale: Float) -> Float {
        var maxima = SIMD8<Float>(repeating: -.infinity)
        var j = 0
        while j + 8 <= width {
            let value = UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self)
            maxima = maxima.replacing(with: value, where: value .> maxima)
            j += 8
        }
        var maximum = -Float.infinity
        for lane in 0..<8 where maxima[lane] > maximum { maximum = maxima[lane] }
        while j < width { if x[j] > maximum { maximum = x[j] }; j += 1 }
        if maximum == -.infinity {
            for j in 0..<width { out[j] = .nan }
            return .nan
        }
        // exp(scale·x − scale·max) eight lanes at a time (vectorExp: relative error < 2e-7).
        var sums = SIMD8<Float>(repeating: 0)
        let scale8 = SIMD8<Float>(repeating: scale), shift = SIMD8<Float>(repeating: scale * maximum)
        j = 0
        while j + 8 <= width {
            let e = vectorExp(UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self) * scale8 - shift)
            UnsafeMutableRawPointer(out + j).storeBytes(of: e, as: SIMD8<Float>.self)
            sums += e
            j += 8
        }
        var sum = sums.sum()
        while j < width {
            let e = exp(scale * x[j] - scale * maximum)
            out[j] = e
            sum += e
            j += 1
        }
        return 1 / sum
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
