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
            // Per row, the LoRA-independent parts of the logit: w_base⊙LN_b(y₀) + bias and w_cross⊙LN_b(y₀).
            let baseTerm = UnsafeMutablePointer<Float>.allocate(capacity: width + 8)
            let crossTerm = UnsafeMutablePointer<Float>.allocate(capacity: width + 8)
            defer { baseTerm.deallocate(); crossTerm.deallocate() }
            for row in range {
                let y = base + row &* width, output = out + row &* width
                let (mean, inverse) = statistics(y, width: width, epsilon: epsilon)
                for j in 0..<width {
                    let normedBase = (y[j] - mean) * inverse * normBaseWeight[j] + normBaseBias[j]
                    baseTerm[j] = weightBase[j] * normedBase + bias[j]
                    crossTerm[j] = weightCross[j] * normedBase
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
                        let value = load(d, j)
                        let normed = (value - mean8) * inverse8 * load(normLoRAWeight, j) + load(normLoRABias, j)
                        let logit = load(baseTerm, j) + (load(weightLoRA, j) + load(crossTerm, j)) * normed
                        let gate = 1 / (1 + vectorExp(-logit))
                        let updated = load(output, j) + load(weightOut, j) * gate * value
                        UnsafeMutableRawPointer(output + j).storeBytes(of: updated, as: SIMD8<Float>.self)
                        j += 8
                    }
                    while j < width {
                        let normed = (d[j] - loraMean) * loraInverse * normLoRAWeight[j] + normLoRABias[j]
                        let logit = baseTerm[j] + (weightLoRA[j] + crossTerm[j]) * normed
                        output[j] += weightOut[j] * d[j] / (1 + exp(-logit))
                        j += 1
                    }
                }
            }
        }
    }
}
