import Foundation

/// AutoLoRA's fused LoRA gate (DiffSynth `LoraMerger`), one row at a time: both
/// LayerNorms, the N sigmoid gates and the weighted sum, with only a row of LN_base(y₀) as
/// scratch — nothing per LoRA is written to memory.
enum GateKernels {
    /// Two-pass mean and 1/√(variance + ε) of one row, four vectors of partial sums (one
    /// accumulator would wait on the add latency every eight columns).
    @inline(__always)
    static func statistics(_ row: UnsafePointer<Float>, width: Int, epsilon: Float) -> (mean: Float, inverse: Float) {
        @inline(__always) func load(_ index: Int) -> SIMD8<Float> { UnsafeRawPointer(row + index).loadUnaligned(as: SIMD8<Float>.self) }
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>(), s2 = SIMD8<Float>(), s3 = SIMD8<Float>(), tail: Float = 0
        var j = 0
        while j + 32 <= width { s0 += load(j); s1 += load(j + 8); s2 += load(j + 16); s3 += load(j + 24); j += 32 }
        while j + 8 <= width { s0 += load(j); j += 8 }
        while j < width { tail += row[j]; j += 1 }
        let mean = ((s0 + s1) + (s2 + s3)).sum() / Float(width) + tail / Float(width)
        let m = SIMD8<Float>(repeating: mean)
        var q0 = SIMD8<Float>(), q1 = SIMD8<Float>(), q2 = SIMD8<Float>(), q3 = SIMD8<Float>(), tailSquares: Float = 0
        j = 0
        while j + 32 <= width {
            let d0 = load(j) - m, d1 = load(j + 8) - m, d2 = load(j + 16) - m, d3 = load(j + 24) - m
            q0 += d0 * d0; q1 += d1 * d1; q2 += d2 * d2; q3 += d3 * d3
            j += 32
        }
        while j + 8 <= width { let d = load(j) - m; q0 += d * d; j += 8 }
        while j < width { let d = row[j] - mean; tailSquares += d * d; j += 1 }
        return (mean, 1 / ((((q0 + q1) + (q2 + q3)).sum() + tailSquares) / Float(width) + epsilon).squareRoot())
    }

    static func loraGate(base: UnsafePointer<Float>, parameters: UnsafePointer<Float>, loras: [UnsafePointer<Float>],
                         out: UnsafeMutablePointer<Float>, rows: Int, width: Int, epsilon: Float, threads: Int) {
        gate(base: base, parameters: parameters, count: loras.count, out: out, rows: rows, width: width, epsilon: epsilon,
             threads: threads, scratch: 0, prepare: { _, _, _ in }) { row, index, _ in loras[index] + row &* width }
    }

    /// `loraGate` with dᵢ = u[:, Rᵢ's columns] · up[:, Rᵢ's columns]ᵀ formed per row in a
    /// scratch row (`Op.lowRankGate`). `up` is packed once into panels of 8 output columns,
    /// each holding only the rank range where one of its 8 rows is non-zero: a LoRA's B
    /// laid block-diagonally over a fused q/k/v costs its own rank, not the stack's.
    static func lowRankGate(base: UnsafePointer<Float>, parameters: UnsafePointer<Float>, lowRank: UnsafePointer<Float>,
                            up: UnsafePointer<Float>, ranks: [Int], out: UnsafeMutablePointer<Float>, rows: Int, width: Int,
                            epsilon: Float, threads: Int) {
        let panels = LowRankPanels(up: up, width: width, ranks: ranks)
        defer { panels.deallocate() }
        let total = ranks.reduce(0, +), stride = width + 8, group = LowRankPanels.rowGroup
        // Per group of rows, every LoRA's dᵢ rows are formed first (scratch row index·group + r).
        gate(base: base, parameters: parameters, count: ranks.count, out: out, rows: rows, width: width, epsilon: epsilon,
             threads: threads, scratch: ranks.count * group * stride, prepare: { first, count, scratch in
                for index in ranks.indices {
                    panels.product(lora: index, u: lowRank + first &* total, uStride: total, rows: count,
                                   into: scratch + index * group * stride, stride: stride)
                }
             }) { row, index, scratch in
            UnsafePointer(scratch + (index * group + row % group) * stride)
        }
    }

    /// B of each LoRA in panels of 8 output columns × its non-zero rank range.
    struct LowRankPanels {
        /// Per (LoRA, block of 8 columns): first panel vector, first rank (absolute column of
        /// u) and rank count.
        let starts: UnsafeMutablePointer<Int>
        let firsts: UnsafeMutablePointer<Int>
        let counts: UnsafeMutablePointer<Int>
        let vectors: UnsafeMutablePointer<SIMD8<Float>>
        let blocks: Int

        init(up: UnsafePointer<Float>, width: Int, ranks: [Int]) {
            let total = ranks.reduce(0, +)
            blocks = (width + 7) / 8
            let entries = blocks * ranks.count
            starts = .allocate(capacity: entries)
            firsts = .allocate(capacity: entries)
            counts = .allocate(capacity: entries)
            vectors = .allocate(capacity: max(1, blocks * total))
            var used = 0, offset = 0
            for (lora, rank) in ranks.enumerated() {
                defer { offset += rank }
                for block in 0..<blocks {
                    let columns = block * 8..<min(width, block * 8 + 8)
                    var low = rank, high = 0
                    for column in columns {
                        let row = up + column * total + offset
                        for k in 0..<rank where row[k] != 0 { low = min(low, k); high = max(high, k + 1) }
                    }
                    let entry = lora * blocks + block
                    starts[entry] = used
                    firsts[entry] = offset + low
                    counts[entry] = max(0, high - low)
                    for k in low..<max(low, high) {
                        var vector = SIMD8<Float>()
                        for (lane, column) in columns.enumerated() { vector[lane] = up[column * total + offset + k] }
                        vectors[used] = vector
                        used += 1
                    }
                }
            }
        }

        func deallocate() {
            starts.deallocate(); firsts.deallocate(); counts.deallocate(); vectors.deallocate()
        }

        /// Rows formed together: each panel vector loaded once feeds this many accumulators.
        static let rowGroup = 4

        /// d = u · Bᵀ of LoRA `lora` for `rows` (1…4) rows of u, `uStride` apart, written to
        /// rows of `out` `stride` apart (each `width` rounded up to 8).
        @inline(__always)
        func product(lora: Int, u: UnsafePointer<Float>, uStride: Int, rows: Int, into out: UnsafeMutablePointer<Float>, stride: Int) {
            // Missing rows of a short group repeat the last one; only real rows are stored.
            let u0 = u, u1 = u + min(1, rows - 1) * uStride, u2 = u + min(2, rows - 1) * uStride, u3 = u + min(3, rows - 1) * uStride
            for block in 0..<blocks {
                let entry = lora * blocks + block
                let panel = vectors + starts[entry], first = firsts[entry], count = counts[entry]
                var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
                for k in 0..<count {
                    let vector = panel[k]
                    a0.addProduct(SIMD8(repeating: u0[first + k]), vector)
                    a1.addProduct(SIMD8(repeating: u1[first + k]), vector)
                    a2.addProduct(SIMD8(repeating: u2[first + k]), vector)
                    a3.addProduct(SIMD8(repeating: u3[first + k]), vector)
                }
                let target = UnsafeMutableRawPointer(out + block * 8)
                target.storeBytes(of: a0, as: SIMD8<Float>.self)
                if rows > 1 { target.storeBytes(of: a1, toByteOffset: stride * 4, as: SIMD8<Float>.self) }
                if rows > 2 { target.storeBytes(of: a2, toByteOffset: 2 * stride * 4, as: SIMD8<Float>.self) }
                if rows > 3 { target.storeBytes(of: a3, toByteOffset: 3 * stride * 4, as: SIMD8<Float>.self) }
            }
        }
    }

    /// The gate over rows, in groups of `LowRankPanels.rowGroup`: `prepare(first, count,
    /// scratch)` runs before each group, then `loraRow(row, index, scratch)` gives dᵢ's row
    /// (possibly formed in `scratch`, `scratch` floats per thread).
    @inline(__always)
    static func gate(base: UnsafePointer<Float>, parameters: UnsafePointer<Float>, count: Int, out: UnsafeMutablePointer<Float>,
                     rows: Int, width: Int, epsilon: Float, threads: Int, scratch: Int,
                     prepare: (Int, Int, UnsafeMutablePointer<Float>) -> Void,
                     loraRow: (Int, Int, UnsafeMutablePointer<Float>) -> UnsafePointer<Float>) {
        let weightBase = parameters, weightLoRA = parameters + width, weightCross = parameters + 2 * width
        let weightOut = parameters + 3 * width, bias = parameters + 4 * width
        let normBaseWeight = parameters + 5 * width, normBaseBias = parameters + 6 * width
        let normLoRAWeight = parameters + 7 * width, normLoRABias = parameters + 8 * width
        let group = LowRankPanels.rowGroup
        parallelFor((rows + group - 1) / group, threads: threads, minimumChunk: max(1, 2048 / max(width, 1))) { groups in
            // Per row, the LoRA-independent parts of the logit: w_base⊙LN_b(y₀) + bias and w_cross⊙LN_b(y₀).
            let baseTerm = UnsafeMutablePointer<Float>.allocate(capacity: width + 8)
            let crossTerm = UnsafeMutablePointer<Float>.allocate(capacity: width + 8)
            let rowScratch = UnsafeMutablePointer<Float>.allocate(capacity: max(1, scratch))
            defer { baseTerm.deallocate(); crossTerm.deallocate(); rowScratch.deallocate() }
            for row in groups.lowerBound * group..<min(rows, groups.upperBound * group) {
                if row % group == 0 { prepare(row, min(group, rows - row), rowScratch) }
                let y = base + row &* width, output = out + row &* width
                let (mean, inverse) = statistics(y, width: width, epsilon: epsilon)
                for j in 0..<width {
                    let normedBase = (y[j] - mean) * inverse * normBaseWeight[j] + normBaseBias[j]
                    baseTerm[j] = weightBase[j] * normedBase + bias[j]
                    crossTerm[j] = weightCross[j] * normedBase
                    output[j] = y[j]
                }
                for index in 0..<count {
                    let d = loraRow(row, index, rowScratch)
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
