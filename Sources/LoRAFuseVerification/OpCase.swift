import Foundation
import LoRAFuse

/// One op on one set of shapes and dtypes, with seeded inputs: the unit of every
/// backend parity check (like a case of ggml's test-backend-ops).
public struct OpCase: Sendable {
    /// The op family, e.g. `matmul`.
    public let op: OpKind
    /// Shapes, dtypes and options, e.g. `[7,33]x[129,33]ᵀ F16`.
    public let label: String
    public let graph: Graph
    public let inputs: [String: HostTensor]
    /// Allowed relative error against float64 (docs/contracts.md, Tolerances).
    public let tolerance: Double

    public var name: String { "\(op.rawValue) \(label)" }
}

/// The catalogue of op cases: odd sizes (1, 7, 33, 129), sizes that are not multiples of
/// any tile, batch > 1, broadcasting, every weight dtype.
public enum OpCaseCatalog {
    public static let defaultTolerance = 1e-4

    /// Builds a one-op case: `build` receives the graph and the input tensors it made.
    static func make(_ op: OpKind, _ label: String, tolerance: Double = defaultTolerance,
                     inputs specs: [(String, HostTensor)], parameters: [(String, HostTensor)] = [],
                     _ build: (inout Graph, [Tensor]) throws -> Tensor) rethrows -> OpCase {
        var graph = Graph()
        var tensors: [Tensor] = []
        for (name, tensor) in specs { tensors.append(graph.input(name, tensor.shape, tensor.dtype)) }
        for (name, tensor) in parameters { tensors.append(graph.parameter(name, tensor)) }
        let output = try build(&graph, tensors)
        graph.markOutput(output)
        return OpCase(op: op, label: label, graph: graph, inputs: Dictionary(uniqueKeysWithValues: specs), tolerance: tolerance)
    }

    /// Every case, with inputs drawn from `seed`.
    public static func all(seed: UInt64 = 0x10FA) -> [OpCase] {
        var random = SeededRandom(seed: seed)
        var cases: [OpCase] = []
        func shapeText(_ shape: Shape) -> String { "[" + shape.dimensions.map(String.init).joined(separator: ",") + "]" }

        // matmul: (m, k, n) with edges in every direction, K past the cache block, batches;
        // 1, 200 and 1030 rows with K % 4 == 0 reach each of the Vulkan texel kernel's blocks.
        let sizes: [(Int, Int, Int)] = [(1, 1, 1), (7, 33, 129), (129, 7, 33), (33, 129, 7), (1, 300, 17),
                                        (97, 261, 50), (200, 300, 260), (1030, 20, 37)]
        for (m, k, n) in sizes {
            for dtype in [DType.float32, .float16, .bfloat16, .float8E4M3, .float8E5M2] {
                for transposeB in [true, false] where dtype == .float32 || transposeB {
                    let a = random.tensor([m, k])
                    let b = random.tensor(transposeB ? [n, k] : [k, n], dtype: dtype)
                    cases.append(try! make(.matmul, "\(shapeText(a.shape))x\(shapeText(b.shape))\(transposeB ? "ᵀ" : "") \(dtype.name)",
                                           inputs: [("a", a)], parameters: [("b", b)]) { g, t in
                        try g.matmul(t[0], t[1], transposeB: transposeB)
                    })
                }
            }
        }
        do {
            let a = random.tensor([33, 7])  // read as aᵀ: [7, 33]
            let b = random.tensor([33, 19])
            cases.append(try! make(.matmul, "[33,7]ᵀx[33,19]", inputs: [("a", a), ("b", b)]) { g, t in
                try g.matmul(t[0], t[1], transposeA: true)
            })
            let batched = random.tensor([3, 7, 33]), shared = random.tensor([17, 33], dtype: .bfloat16)
            cases.append(try! make(.matmul, "[3,7,33]x[17,33]ᵀ BF16", inputs: [("a", batched)], parameters: [("b", shared)]) { g, t in
                try g.matmul(t[0], t[1], transposeB: true)
            })
            let left = random.tensor([2, 1, 7, 9]), right = random.tensor([3, 9, 5])
            cases.append(try! make(.matmul, "[2,1,7,9]x[3,9,5] broadcast", inputs: [("a", left), ("b", right)]) { g, t in
                try g.matmul(t[0], t[1])
            })
        }

        // LoRA paths: ranks 1 to 64, odd widths, batched rows, every factor dtype.
        let lowRankShapes: [(Shape, Int, Int, Int, DType)] = [([7], 33, 129, 4, .float32), ([2, 5], 65, 17, 16, .float16),
                                                              ([1], 129, 33, 1, .bfloat16), ([97], 300, 260, 64, .float32),
                                                              ([3, 41], 48, 70, 3, .bfloat16), ([5, 9], 64, 30, 8, .float16),
                                                              ([13], 128, 66, 12, .bfloat16), ([40], 36, 257, 16, .float32)]
        for (rows, k, n, rank, dtype) in lowRankShapes {
            let x = random.tensor(Shape(rows.dimensions + [k])), y = random.tensor(Shape(rows.dimensions + [n]))
            let down = random.tensor([rank, k], dtype: dtype), up = random.tensor([n, rank], dtype: dtype)
            cases.append(try! make(.lowRankUpdate, "x\(shapeText(x.shape)) r\(rank) → \(n) \(dtype.name)",
                                   inputs: [("y", y), ("x", x)], parameters: [("down", down), ("up", up)]) { g, t in
                try g.lowRankUpdate(t[0], input: t[1], down: t[2], up: t[3], scale: 0.75)
            })
        }

        // Top-K of |x|: odd sizes, K = 1 and K = all, several inputs as one set, and ties
        // (values drawn from a few levels, so the K-th largest repeats).
        let topKShapes: [([Shape], Int, Bool)] = [([[7, 33]], 5, false), ([[1]], 1, false), ([[129, 65]], 1000, false),
                                                  ([[33, 7], [5], [2, 3, 4]], 17, false), ([[300, 41]], 12300, false),
                                                  ([[97, 13]], 150, true), ([[40, 40], [17]], 801, true)]
        for (shapes, k, ties) in topKShapes {
            let tensors = shapes.enumerated().map { index, shape -> (String, HostTensor) in
                var tensor = random.tensor(shape)
                if ties { tensor = HostTensor(shape: shape, floats: tensor.floats().map { ($0 * 4).rounded() / 4 }) }
                return ("x\(index)", tensor)
            }
            cases.append(try! make(.topKAbsSum, shapes.map(shapeText).joined(separator: "+") + " k\(k)\(ties ? " ties" : "")",
                                   inputs: tensors) { g, t in
                try g.topKAbsSum(t, k: k)
            })
        }

        // Top-K of LoRA updates never stored: one and several parts, odd widths, every dtype.
        let productShapes: [([(Int, Int, Int, DType, Float)], Int)] = [
            ([(7, 3, 33, .float32, 1.5)], 9), ([(130, 16, 97, .bfloat16, 0.25)], 256),
            ([(33, 12, 40, .float16, 2), (33, 12, 40, .float16, 2), (65, 12, 40, .float16, 2)], 144),
            ([(300, 4, 129, .float32, -0.5)], 38700)]
        for (parts, k) in productShapes {
            let tensors = parts.enumerated().flatMap { index, part in
                [("up\(index)", random.tensor([part.0, part.1], dtype: part.3)), ("down\(index)", random.tensor([part.1, part.2], dtype: part.3))]
            }
            let label = parts.map { "[\($0.0),\($0.1)]x[\($0.1),\($0.2)] \($0.3.name)" }.joined(separator: " + ") + " k\(k)"
            cases.append(try! make(.lowRankTopKAbsSum, label, inputs: [], parameters: tensors) { g, t in
                try g.lowRankTopKAbsSum(parts.indices.map { (t[2 * $0], t[2 * $0 + 1], parts[$0].4) }, k: k)
            })
        }

        // AutoLoRA's gate: 1 to 8 LoRAs, odd widths, batched rows, one width past 1024.
        for (rows, width, count) in [(Shape([7]), 33, 1), (Shape([2, 5]), 130, 2), (Shape([3]), 1031, 4), (Shape([1]), 9, 8),
                                     (Shape([40]), 256, 3)] {
            let shape = Shape(rows.dimensions + [width])
            var parameters = random.tensor([9, width]).floats()
            for column in 0..<width {  // norm weights near 1, as trained LayerNorms are
                parameters[5 * width + column] += 1
                parameters[7 * width + column] += 1
            }
            let inputs = [("y", random.tensor(shape, in: -3...3))] + (0..<count).map { ("d\($0)", random.tensor(shape, in: -0.5...0.5)) }
            cases.append(try! make(.loraGate, "\(shapeText(shape)) N=\(count)", inputs: inputs,
                                   parameters: [("merger", HostTensor(shape: [9, width], floats: parameters))]) { g, t in
                try g.loraGate(t[0], parameters: t[count + 1], loraOutputs: Array(t[1...count]))
            })
        }

        // The gate with LoRA outputs formed inside: odd widths and ranks, batched rows, and a
        // block-diagonal up (each LoRA touching only some parts of a fused layer).
        for (rows, width, ranks, blocks) in [(Shape([7]), 33, [3], 1), (Shape([2, 5]), 130, [4, 7], 2), (Shape([3]), 1031, [2, 5, 1, 8], 1),
                                             (Shape([1]), 9, [1, 1, 1, 1, 1, 1, 1, 1], 1), (Shape([40]), 256, [6, 3, 9], 3)] {
            let shape = Shape(rows.dimensions + [width])
            var parameters = random.tensor([9, width]).floats()
            for column in 0..<width {
                parameters[5 * width + column] += 1
                parameters[7 * width + column] += 1
            }
            let total = ranks.reduce(0, +)
            var up = random.tensor([width, total]).floats()
            if blocks > 1 {
                // As AutoLoRAFusion lays out a fused layer: part b of the output columns sees only
                // its share of each LoRA's rank columns (none when the rank is smaller than the parts).
                var offset = 0
                for rank in ranks {
                    for column in 0..<width {
                        let part = column * blocks / width
                        for k in 0..<rank where !(rank * part / blocks..<rank * (part + 1) / blocks).contains(k) { up[column * total + offset + k] = 0 }
                    }
                    offset += rank
                }
            }
            let inputs = [("y", random.tensor(shape, in: -3...3)), ("u", random.tensor(Shape(rows.dimensions + [total]), in: -0.5...0.5))]
            cases.append(try! make(.lowRankGate, "\(shapeText(shape)) ranks \(ranks.map(String.init).joined(separator: ","))\(blocks > 1 ? " blocks" : "")",
                                   inputs: inputs, parameters: [("merger", HostTensor(shape: [9, width], floats: parameters)),
                                                                ("up", HostTensor(shape: [width, total], floats: up))]) { g, t in
                try g.lowRankGate(t[0], parameters: t[2], lowRank: t[1], up: t[3], ranks: ranks)
            })
        }

        // Broadcasting binary ops.
        let binaryShapes: [(Shape, Shape)] = [([7, 33], [7, 33]), ([7, 33], [33]), ([2, 1, 5], [3, 1]),
                                              ([1], [7, 1, 3]), ([129], [1]), ([2, 3, 4, 5], [3, 1, 5])]
        for op in BinaryOperator.allCases {
            for (lhs, rhs) in binaryShapes {
                let a = random.tensor(lhs)
                let b = op == .div ? random.tensor(rhs, in: 0.5...2) : random.tensor(rhs)
                cases.append(try! make(.binary, "\(op.rawValue) \(shapeText(lhs)) \(shapeText(rhs))", inputs: [("a", a), ("b", b)]) { g, t in
                    try g.binary(op, t[0], t[1])
                })
            }
        }
        let scaled = random.tensor([7, 129])
        cases.append(try! make(.scale, "[7,129] ×-0.37", inputs: [("x", scaled)]) { g, t in try g.scale(t[0], -0.37) })

        for function in UnaryFunction.allCases {
            for shape: Shape in [[1], [33, 7], [3, 129]] {
                let x = random.tensor(shape, in: -4...4)
                cases.append(try! make(.unary, "\(function.rawValue) \(shapeText(shape))", inputs: [("x", x)]) { g, t in
                    try g.unary(function, t[0])
                })
            }
        }

        for shape: Shape in [[1, 1], [7, 129], [2, 3, 33]] {
            let x = random.tensor(shape, in: -8...8)
            cases.append(try! make(.softmax, shapeText(shape), inputs: [("x", x)]) { g, t in try g.softmax(t[0]) })
            let width = shape.last
            let w = random.tensor([width]), bias = random.tensor([width])
            let shifted = random.tensor(shape, in: 2...6)  // large mean: catches one-pass variance
            cases.append(try! make(.layerNorm, shapeText(shape), inputs: [("x", shifted)]) { g, t in try g.layerNorm(t[0]) })
            cases.append(try! make(.layerNorm, "\(shapeText(shape)) affine", inputs: [("x", x)], parameters: [("w", w), ("b", bias)]) { g, t in
                try g.layerNorm(t[0], weight: t[1], bias: t[2], epsilon: 1e-6)
            })
            cases.append(try! make(.rmsNorm, shapeText(shape), inputs: [("x", x)]) { g, t in try g.rmsNorm(t[0]) })
            cases.append(try! make(.rmsNorm, "\(shapeText(shape)) weight", inputs: [("x", x)], parameters: [("w", w)]) { g, t in
                try g.rmsNorm(t[0], weight: t[1], epsilon: 1e-6)
            })
        }

        for (batch, length, heads, dim) in [(1, 1, 1, 2), (2, 7, 3, 8), (1, 33, 2, 64)] {
            let x = random.tensor([batch, length, heads, dim])
            let angles = random.tensor([length, dim / 2], in: -3.2...3.2).doubles()
            let cos = HostTensor(shape: [length, dim / 2], dtype: .float32, values: angles.map { Foundation.cos($0) })
            let sin = HostTensor(shape: [length, dim / 2], dtype: .float32, values: angles.map { Foundation.sin($0) })
            cases.append(try! make(.rotaryEmbedding, shapeText(x.shape), inputs: [("x", x), ("cos", cos), ("sin", sin)]) { g, t in
                try g.rotaryEmbedding(t[0], cos: t[1], sin: t[2])
            })
        }

        // Attention: [B, Lq, H, D] against [B, Lk, H, D], masks, causal.
        for (batch, lq, lk, heads, dim) in [(1, 1, 1, 1, 8), (2, 7, 33, 3, 16), (1, 129, 129, 2, 64), (1, 33, 200, 1, 128),
                                          (2, 45, 31, 2, 40), (1, 15, 64, 1, 24)] {
            let q = random.tensor([batch, lq, heads, dim]), k = random.tensor([batch, lk, heads, dim]), v = random.tensor([batch, lk, heads, dim])
            let label = "q[\(batch),\(lq),\(heads),\(dim)] kv[\(lk)]"
            cases.append(try! make(.attention, label, inputs: [("q", q), ("k", k), ("v", v)]) { g, t in
                try g.attention(query: t[0], key: t[1], value: t[2])
            })
            if lq == lk {
                cases.append(try! make(.attention, label + " causal", inputs: [("q", q), ("k", k), ("v", v)]) { g, t in
                    try g.attention(query: t[0], key: t[1], value: t[2], causal: true)
                })
            }
            let mask2 = random.tensor([lq, lk], in: -3...0)
            cases.append(try! make(.attention, label + " mask[Lq,Lk]", inputs: [("q", q), ("k", k), ("v", v), ("mask", mask2)]) { g, t in
                try g.attention(query: t[0], key: t[1], value: t[2], mask: t[3], scale: 0.2)
            })
            let mask4 = random.tensor([batch, 1, lq, lk], in: -3...0)
            cases.append(try! make(.attention, label + " mask[B,1,Lq,Lk]", inputs: [("q", q), ("k", k), ("v", v), ("mask", mask4)]) { g, t in
                try g.attention(query: t[0], key: t[1], value: t[2], mask: t[3])
            })
        }

        // Layout ops (exact: tolerance 0).
        let x4 = random.tensor([2, 7, 3, 5])
        cases.append(try! make(.reshape, "[2,7,3,5]→[14,15]", tolerance: 0, inputs: [("x", x4)]) { g, t in try g.reshape(t[0], [14, 15]) })
        for order in [[0, 2, 1, 3], [3, 2, 1, 0], [1, 0, 3, 2]] {
            cases.append(try! make(.permute, "[2,7,3,5] \(order)", tolerance: 0, inputs: [("x", x4)]) { g, t in try g.permute(t[0], order) })
        }
        for (axis, start, end) in [(0, 1, 2), (1, 2, 7), (3, 0, 1), (2, 1, 3)] {
            cases.append(try! make(.slice, "[2,7,3,5] axis \(axis) \(start)..<\(end)", tolerance: 0, inputs: [("x", x4)]) { g, t in
                try g.slice(t[0], axis: axis, start: start, end: end)
            })
        }
        for axis in 0..<3 {
            var shapes: [Shape] = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
            shapes[1].dimensions[axis] = 1
            shapes[2].dimensions[axis] = 5
            let parts = shapes.enumerated().map { ("p\($0.offset)", random.tensor($0.element)) }
            cases.append(try! make(.concat, "3 parts axis \(axis)", tolerance: 0, inputs: parts) { g, t in try g.concat(t, axis: axis) })
        }
        // conv2d: 3×3 with padding (the VAE's), 1×1 shortcuts, odd sizes and channel counts
        // past the register blocks, batches, every weight type.
        let convolutions: [(Shape, Int, Int, Int, DType, Bool)] = [
            ([1, 3, 7, 9], 5, 3, 1, .float32, true), ([2, 6, 5, 4], 9, 3, 1, .float16, true), ([1, 8, 6, 6], 4, 1, 0, .float32, true),
            ([1, 5, 9, 7], 17, 3, 0, .bfloat16, false), ([1, 4, 4, 5], 6, 1, 0, .float8E4M3, true), ([1, 33, 12, 10], 7, 3, 1, .float32, true),
            ([2, 3, 6, 11], 2, 5, 2, .float8E5M2, false),
        ]
        for (shape, outputs, kernelSize, padding, dtype, hasBias) in convolutions {
            let x = random.tensor(shape)
            let weight = random.tensor([outputs, shape[1], kernelSize, kernelSize], dtype: dtype)
            var parameters = [("weight", weight)]
            if hasBias { parameters.append(("bias", random.tensor([outputs]))) }
            cases.append(try! make(.conv2d, "\(shapeText(shape)) → \(outputs)×\(kernelSize)×\(kernelSize) pad \(padding) \(dtype.name)\(hasBias ? " +bias" : "")",
                                   inputs: [("x", x)], parameters: parameters) { g, t in
                try g.conv2d(t[0], weight: t[1], bias: hasBias ? t[2] : nil, padding: padding)
            })
        }
        for dtype in [DType.float32, .float16, .bfloat16, .float8E4M3, .float8E5M2] {
            for idType in [DType.int32, .int64] where idType == .int64 || dtype.byteSize > 1 {
                let table = random.tensor([50, 33], dtype: dtype)
                let ids = HostTensor(shape: [2, 7], dtype: idType, values: (0..<14).map { Double(($0 * 17 + 3) % 50) })
                cases.append(try! make(.embedding, "[50,33] \(dtype.name) ids \(idType.name)", tolerance: 0,
                                       inputs: [("ids", ids)], parameters: [("table", table)]) { g, t in
                    try g.embedding(table: t[1], ids: t[0])
                })
            }
        }
        for target in [DType.float16, .bfloat16] {
            let x = random.tensor([7, 33], in: -70000...70000)
            cases.append(try! make(.cast, "F32→\(target.name)→F32 [7,33]", tolerance: 0, inputs: [("x", x)]) { g, t in
                try g.cast(g.cast(t[0], to: target), to: .float32)
            })
        }
        for source in [DType.bfloat16, .float8E4M3, .float8E5M2] {
            let wide = random.tensor([3, 5], dtype: source, in: -300...300)
            cases.append(try! make(.cast, "\(source.name)→F32 [3,5]", tolerance: 0, inputs: [("x", wide)]) { g, t in try g.cast(t[0], to: .float32) })
        }
        return cases
    }
}
