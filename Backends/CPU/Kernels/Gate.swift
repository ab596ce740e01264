/// AutoLoRA's fused LoRA gate (DiffSynth `LoraMerger`), one row at a time: both
/// LayerNorms, the N sigmoid gates and the weighted sum, with only a row of LN_base(y₀) as
/// scratch — nothing per LoRA is written to memory.
enum GateKernels {
    /// Two-pass mean and 1/√(variance + ε) of one row.
    @inline(__always)
    static func statistics(_ row: UnsafePointer<Float>, width: Int, epsilon: Float) -> (mean: Float, inverse: Float) {
        var sum: Float = 0
        for j in 0..<width { sum += row[j] }
        let mean = sum / Float(width)
        var squares: Float = 0
        for j in 0..<width { let d = row[j] - mean; squares += d * d }
        return (mean, 1 / (squares / Float(width) + epsilon).squareRoot())
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
                    var j = 0
                    // Eight columns at a time: the logits, one vector exp for the sigmoids.
                    while j < width {
                        let lanes = min(8, width - j)
                        var logit = SIMD8<Float>(), value = SIMD8<Float>(), scale = SIMD8<Float>()
                        for lane in 0..<lanes {
                            let column = j + lane
                            let normed = (d[column] - loraMean) * loraInverse * normLoRAWeight[column] + normLoRABias[column]
                            let b = normedBase[column]
                            logit[lane] = weightBase[column] * b + weightLoRA[column] * normed + weightCross[column] * b * normed + bias[column]
                            value[lane] = d[column]
                            scale[lane] = weightOut[column]
                        }
                        let gate = 1 / (1 + vectorExp(-logit))
                        let contribution = scale * gate * value
                        for lane in 0..<lanes { output[j + lane] += contribution[lane] }
                        j += 8
                    }
                }
            }
        }
    }
}
