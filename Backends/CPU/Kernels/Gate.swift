import Foundation

/// AutoLoRA's fused LoRA gate (DiffSynth `LoraMerger`), one row at a time: both
/// LayerNorms, the N sigmoid gates and the weighted sum, with only a row of LN_base(y₀) as
/// scratch — nothing per LoRA is written to memory.
enum GateKernels {
    /// Two-pass mean and 1/√(variance + ε) of one row, eight lanes of partial sums.
    @inline(__always)
    static func statistics(_ row: UnsafePointer<Float>, width: Int, epsilon: Float) -> (mean: Float, inverse: Float) {
        var sums = SIMD8<Float>(), tail: Float = 0
        var j = 0
        while j + 8 <= width { sums += UnsafeRawPointer(row + j).loadUnaligned(as: SIMD8<Float>.self); j += 8 }
        while j < width { tail += row[j]; j += 1 }
        let mean = (sums.sum() + tail) / Float(width)
        let mean8 = SIMD8<Float>(repeating: mean)
        var squares = SIMD8<Float>(), tailSquares: Float = 0
        j = 0
        while j + 8 <= width {
            let d = UnsafeRawPointer(row + j).loadUnaligned(as: SIMD8<Float>.self) - mean8
            squares += d * d
            j += 8
        }
        while j < width { let d = row[j] - mean; tailSquares += d * d; j += 1 }
        return (mean, 1 / ((squares.sum() + tailSquares) / Float(width) + epsilon).squareRoot())
    }

    static func loraGate(base: UnsafePointer<Float>, parameters: UnsafePointer<Float>, loras: [UnsafePointer<Float>],
                         out: UnsafeMutablePointer<Float>, rows: Int, width: Int, epsilon: Float, threads: Int) {
        let weightBase = parameters, weightLoRA = parameters + width, weightCross = parameters + 2 * width
        let weightOut = parameters + 3 * width, bias = parameters + 4 * width
        let normBaseWeight = parameters + 5 * width, normBaseBias = parameters + 6 * width
        let normLoRAWeight = parameters + 7 * width, normLoRABias = parameters + 8 * width
        parallelFor(rows, threads: threads, minimumChunk: max(1, 8192 / max(width, 1))) { range in
            let normedBase = UnsafeMutablePointer<Float>.allocate(capacity: width + 8)
            defer { normedBase.deallocate() }
            for row in range {
                let y = base + row &* width, output = out + row &* width
                let (mean, inverse) = statistics(y, width: width, epsilon: epsilon)
                for j in 0..<width {
                    normedBase[j] = (y[j] - mean) * inverse * normBaseWeight[j] + normBaseBias[j]
                    output[j] = y[j]
                }
                for lora in loras {
                    let d = lora + row &* width
                    let (loraMean, loraInverse) = statistics(d, width: width, epsilon: epsilon)
                    @inline(__always) func load(_ pointer: UnsafePointer<Float>, _ index: Int) -> SIMD8<Float> {
                        UnsafeRawPointer(pointer + index).loadUnaligned(as: SIMD8<Float>.self)
                    }
                    let mean8 = SIMD8<Float>(repeating: loraMean), inverse8 = SIMD8<Float>(repeating: loraInverse)
                    var j = 0
                    // Eight columns at a time, one vector exp for the sigmoids.
                    while j + 8 <= width {
                        let value = load(d, j), b = load(normedBase, j)
                        let normed = (value - mean8) * inverse8 * load(normLoRAWeight, j) + load(normLoRABias, j)
                        let logit = load(weightBase, j) * b + load(weightLoRA, j) * normed + load(weightCross, j) * b * normed + load(bias, j)
                        let gate = 1 / (1 + vectorExp(-logit))
                        let updated = load(output, j) + load(weightOut, j) * gate * value
                        UnsafeMutableRawPointer(output + j).storeBytes(of: updated, as: SIMD8<Float>.self)
                        j += 8
                    }
                    while j < width {
                        let normed = (d[j] - loraMean) * loraInverse * normLoRAWeight[j] + normLoRABias[j]
                        let b = normedBase[j]
                        let logit = weightBase[j] * b + weightLoRA[j] * normed + weightCross[j] * b * normed + bias[j]
                        output[j] += weightOut[j] * d[j] / (1 + exp(-logit))
                        j += 1
                    }
                }
            }
        }
    }
}
