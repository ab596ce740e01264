import Foundation
import LoRAFuse

/// Evaluates a graph in float64 with the plainest possible loops: the yardstick every
/// backend is measured against (docs/contracts.md: CPU vs float64 ≤ 1e-4). Slow by
/// design; use it on small shapes only.
public enum ReferenceEvaluator {
    /// A node's value in float64, with its shape.
    public struct Value {
        public var shape: Shape
        public var values: [Double]
    }

    /// Every node of `graph` evaluated in float64 (weights widened exactly), by node id.
    public static func evaluate(_ graph: Graph, inputs: [String: HostTensor]) throws -> [Value] {
        var values = [Value?](repeating: nil, count: graph.nodes.count)
        for node in graph.nodes {
            let operands = node.inputs.map { values[$0]! }
            values[node.id] = try evaluate(node, operands, graph: graph, inputs: inputs)
        }
        return graph.outputs.map { values[$0]! }
    }

    private static func evaluate(_ node: Node, _ x: [Value], graph: Graph, inputs: [String: HostTensor]) throws -> Value {
        let shape = node.type.shape
        switch node.op {
        case let .input(name):
            guard let tensor = inputs[name] else { throw BackendError.missingInput(name: name, expected: node.type) }
            return Value(shape: tensor.shape, values: tensor.doubles())
        case .parameter:
            let tensor = graph.weight(node.id)
            return Value(shape: tensor.shape, values: tensor.doubles())
        case let .matmul(transposeA, transposeB):
            return matmul(x[0], x[1], transposeA: transposeA, transposeB: transposeB, outShape: shape)
        case let .lowRankUpdate(scale):
            let (y, input, down, up) = (x[0], x[1], x[2], x[3])
            let rows = shape.rowCount
            let rank = down.shape[0]
            let low = matmul(Value(shape: [rows, input.shape.last], values: input.values), down,
                             transposeA: false, transposeB: true, outShape: [rows, rank])
            let delta = matmul(low, up, transposeA: false, transposeB: true, outShape: [rows, shape.last])
            return Value(shape: shape, values: zip(y.values, delta.values).map { $0 + Double(scale) * $1 })
        case let .topKAbsSum(k):
            let magnitudes = x.flatMap { $0.values.map(abs) }.sorted(by: >)
            return Value(shape: shape, values: [magnitudes.prefix(k).reduce(0, +), magnitudes.reduce(0, +)])
        case let .lowRankTopKAbsSum(k, scales):
            var magnitudes: [Double] = []
            for (index, scale) in scales.enumerated() {
                let up = x[2 * index], down = x[2 * index + 1]
                let product = matmul(up, down, transposeA: false, transposeB: false, outShape: [up.shape[0], down.shape[1]])
                magnitudes += product.values.map { abs(Double(scale) * $0) }
            }
            magnitudes.sort(by: >)
            return Value(shape: shape, values: [magnitudes.prefix(k).reduce(0, +), magnitudes.reduce(0, +)])
        case let .loraGate(epsilon):
            return gate(x[0], parameters: x[1], loras: Array(x[2...]), epsilon: epsilon)
        case let .lowRankGate(epsilon, ranks):
            let (u, up) = (x[2], x[3])
            let width = shape.last, rows = shape.rowCount, total = ranks.reduce(0, +)
            var offset = 0
            let loras = ranks.map { rank -> Value in
                defer { offset += rank }
                var values = [Double](repeating: 0, count: rows * width)
                for row in 0..<rows {
                    for column in 0..<width {
                        var sum = 0.0
                        for k in offset..<offset + rank { sum += u.values[row * total + k] * up.values[column * total + k] }
                        values[row * width + column] = sum
                    }
                }
                return Value(shape: shape, values: values)
            }
            return gate(x[0], parameters: x[1], loras: loras, epsilon: epsilon)
        case let .binary(op):
            return broadcast(x[0], x[1], to: shape) { a, b in
                switch op {
                case .add: a + b
                case .sub: a - b
                case .mul: a * b
                case .div: a / b
                }
            }
        case let .scale(factor):
            return Value(shape: shape, values: x[0].values.map { $0 * Double(factor) })
        case let .unary(function):
            return Value(shape: shape, values: x[0].values.map { v in
                switch function {
                case .gelu: 0.5 * v * (1 + erf(v / 2.0.squareRoot()))
                case .geluTanh: 0.5 * v * (1 + tanh((2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v)))
                case .quickGelu: v / (1 + exp(-1.702 * v))
                case .silu: v / (1 + exp(-v))
                case .sigmoid: 1 / (1 + exp(-v))
                case .relu: max(v, 0)
                case .tanh: tanh(v)
                }
            })
        case .softmax:
            return rowwise(x[0]) { row in softmax(row) }
        case let .layerNorm(epsilon):
            return rowwise(x[0]) { row in
                let mean = row.reduce(0, +) / Double(row.count)
                let variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(row.count)
                let inverse = 1 / (variance + Double(epsilon)).squareRoot()
                return row.enumerated().map { j, v in
                    let normalized = (v - mean) * inverse
                    return x.count == 3 ? normalized * x[1].values[j] + x[2].values[j] : normalized
                }
            }
        case let .rmsNorm(epsilon):
            return rowwise(x[0]) { row in
                let meanSquare = row.reduce(0) { $0 + $1 * $1 } / Double(row.count)
                let inverse = 1 / (meanSquare + Double(epsilon)).squareRoot()
                return row.enumerated().map { j, v in v * inverse * (x.count == 2 ? x[1].values[j] : 1) }
            }
        case .rotaryEmbedding:
            let (b, l, h, d) = (shape[0], shape[1], shape[2], shape[3])
            var out = x[0].values
            for bi in 0..<b { for li in 0..<l { for hi in 0..<h { for i in 0..<(d / 2) {
                let base = ((bi * l + li) * h + hi) * d + 2 * i
                let c = x[1].values[li * d / 2 + i], s = x[2].values[li * d / 2 + i]
                let a0 = x[0].values[base], a1 = x[0].values[base + 1]
                out[base] = a0 * c - a1 * s
                out[base + 1] = a1 * c + a0 * s
            } } } }
            return Value(shape: shape, values: out)
        case let .attention(scale, causal):
            return attention(x, scale: Double(scale), causal: causal)
        case .reshape:
            return Value(shape: shape, values: x[0].values)
        case let .permute(order):
            let inShape = x[0].shape
            let inStrides = inShape.strides
            var out = [Double](repeating: 0, count: shape.elementCount)
            for flat in 0..<out.count {
                var remainder = flat, offset = 0
                for axis in stride(from: shape.rank - 1, through: 0, by: -1) {
                    offset += (remainder % shape[axis]) * inStrides[order[axis]]
                    remainder /= shape[axis]
                }
                out[flat] = x[0].values[offset]
            }
            return Value(shape: shape, values: out)
        case let .slice(axis, start, _):
            return gather(shape: shape) { index in
                var source = index
                source[axis] += start
                return x[0].values[flatIndex(source, x[0].shape)]
            }
        case let .concat(axis):
            return gather(shape: shape) { index in
                var source = index
                for part in x {
                    if source[axis] < part.shape[axis] { return part.values[flatIndex(source, part.shape)] }
                    source[axis] -= part.shape[axis]
                }
                fatalError("concat index outside every part")
            }
        case let .conv2d(padding):
            let (batch, channels, height, width) = (x[0].shape[0], x[0].shape[1], x[0].shape[2], x[0].shape[3])
            let (outputs, kh, kw) = (x[1].shape[0], x[1].shape[2], x[1].shape[3])
            let (outHeight, outWidth) = (shape[2], shape[3])
            var out = [Double](repeating: 0, count: shape.elementCount)
            for b in 0..<batch { for o in 0..<outputs { for oy in 0..<outHeight { for ox in 0..<outWidth {
                var sum = x.count == 3 ? x[2].values[o] : 0
                for c in 0..<channels { for ky in 0..<kh { for kx in 0..<kw {
                    let iy = oy + ky - padding, ix = ox + kx - padding
                    guard iy >= 0, iy < height, ix >= 0, ix < width else { continue }
                    sum += x[0].values[((b * channels + c) * height + iy) * width + ix] * x[1].values[((o * channels + c) * kh + ky) * kw + kx]
                } } }
                out[((b * outputs + o) * outHeight + oy) * outWidth + ox] = sum
            } } } }
            return Value(shape: shape, values: out)
        case .embedding:
            let width = x[0].shape[1]
            var out: [Double] = []
            for id in x[1].values {
                let row = Int(id)
                guard (0..<x[0].shape[0]).contains(row) else {
                    throw BackendError.deviceFailure(backend: "reference", reason: "embedding id \(row) outside the table")
                }
                out += x[0].values[(row * width)..<((row + 1) * width)]
            }
            return Value(shape: shape, values: out)
        case let .cast(dtype):
            // Round exactly as storing to `dtype` would.
            let rounded = HostTensor(shape: shape, dtype: dtype, values: x[0].values.map { Double(Float($0)) })
            return Value(shape: shape, values: rounded.doubles())
        }
    }

    static func flatIndex(_ index: [Int], _ shape: Shape) -> Int {
        zip(index, shape.strides).reduce(0) { $0 + $1.0 * $1.1 }
    }

    static func multiIndex(_ flat: Int, _ shape: Shape) -> [Int] {
        var remainder = flat
        var index = [Int](repeating: 0, count: shape.rank)
        for axis in stride(from: shape.rank - 1, through: 0, by: -1) {
            index[axis] = remainder % shape[axis]
            remainder /= shape[axis]
        }
        return index
    }

    static func gather(shape: Shape, _ value: ([Int]) -> Double) -> Value {
        Value(shape: shape, values: (0..<shape.elementCount).map { value(multiIndex($0, shape)) })
    }

    /// Index into `operand` for output index `index`, numpy-broadcast.
    static func broadcastIndex(_ index: [Int], _ operand: Shape) -> Int {
        let offset = index.count - operand.rank
        var flat = 0
        for (axis, stride) in operand.strides.enumerated() where operand[axis] != 1 {
            flat += index[axis + offset] * stride
        }
        return flat
    }

    static func broadcast(_ a: Value, _ b: Value, to shape: Shape, _ op: (Double, Double) -> Double) -> Value {
        gather(shape: shape) { index in
            op(a.values[broadcastIndex(index, a.shape)], b.values[broadcastIndex(index, b.shape)])
        }
    }

    static func rowwise(_ x: Value, _ transform: ([Double]) -> [Double]) -> Value {
        let width = x.shape.last
        var out: [Double] = []
        out.reserveCapacity(x.values.count)
        for row in 0..<x.shape.rowCount {
            out += transform(Array(x.values[(row * width)..<((row + 1) * width)]))
        }
        return Value(shape: x.shape, values: out)
    }

    /// AutoLoRA's gate (`Op.loraGate`) of LoRA outputs `loras` over `base`.
    static func gate(_ base: Value, parameters: Value, loras: [Value], epsilon: Float) -> Value {
        let width = base.shape.last, rows = base.shape.rowCount
        let p = parameters.values
        func parameter(_ row: Int, _ column: Int) -> Double { p[row * width + column] }
        func layerNorm(_ values: ArraySlice<Double>, weight: Int, bias: Int) -> [Double] {
            let mean = values.reduce(0, +) / Double(width)
            let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(width)
            let scale = 1 / (variance + Double(epsilon)).squareRoot()
            return values.enumerated().map { column, value in
                (value - mean) * scale * parameter(weight, column) + parameter(bias, column)
            }
        }
        var out = base.values
        for row in 0..<rows {
            let range = row * width..<(row + 1) * width
            let normedBase = layerNorm(base.values[range], weight: 5, bias: 6)
            for lora in loras {
                let normed = layerNorm(lora.values[range], weight: 7, bias: 8)
                for column in 0..<width {
                    let logit = parameter(0, column) * normedBase[column] + parameter(1, column) * normed[column]
                        + parameter(2, column) * normedBase[column] * normed[column] + parameter(4, column)
                    let gate = 1 / (1 + exp(-logit))
                    out[range.lowerBound + column] += parameter(3, column) * gate * lora.values[range.lowerBound + column]
                }
            }
        }
        return Value(shape: base.shape, values: out)
    }

    static func softmax(_ row: [Double]) -> [Double] {
        let maximum = row.max() ?? 0
        if maximum == -.infinity { return row.map { _ in .nan } }
        let exps = row.map { exp($0 - maximum) }
        let sum = exps.reduce(0, +)
        return exps.map { $0 / sum }
    }

    static func matmul(_ a: Value, _ b: Value, transposeA: Bool, transposeB: Bool, outShape: Shape) -> Value {
        let rank = outShape.rank
        let m = outShape[rank - 2], n = outShape[rank - 1]
        let k = transposeA ? a.shape[a.shape.rank - 2] : a.shape[a.shape.rank - 1]
        let batchShape = Shape(Array(outShape.dimensions.dropLast(2)))
        let aBatch = Shape(Array(a.shape.dimensions.dropLast(2))), bBatch = Shape(Array(b.shape.dimensions.dropLast(2)))
        var out = [Double](repeating: 0, count: outShape.elementCount)
        for batch in 0..<batchShape.elementCount {
            let index = multiIndex(batch, batchShape)
            let aBase = broadcastIndex(index, aBatch) * m * k, bBase = broadcastIndex(index, bBatch) * k * n
            for i in 0..<m {
                for j in 0..<n {
                    var sum = 0.0
                    for p in 0..<k {
                        let av = a.values[aBase + (transposeA ? p * m + i : i * k + p)]
                        let bv = b.values[bBase + (transposeB ? j * k + p : p * n + j)]
                        sum += av * bv
                    }
                    out[batch * m * n + i * n + j] = sum
                }
            }
        }
        return Value(shape: outShape, values: out)
    }

    static func attention(_ x: [Value], scale: Double, causal: Bool) -> Value {
        let q = x[0], k = x[1], v = x[2]
        let (batch, lq, heads, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let lk = k.shape[1]
        var out = [Double](repeating: 0, count: q.values.count)
        for b in 0..<batch { for h in 0..<heads { for i in 0..<lq {
            var scores = [Double](repeating: 0, count: lk)
            for j in 0..<lk {
                var dot = 0.0
                for e in 0..<d { dot += q.values[((b * lq + i) * heads + h) * d + e] * k.values[((b * lk + j) * heads + h) * d + e] }
                scores[j] = dot * scale
                if x.count == 4 {
                    let mask = x[3]
                    let maskIndex = mask.shape.rank == 2 ? [i, j] : [b, h, i, j]
                    scores[j] += mask.values[broadcastIndex(maskIndex, mask.shape)]
                }
                if causal && j > i + lk - lq { scores[j] = -.infinity }
            }
            let weights = softmax(scores)
            for e in 0..<d {
                var sum = 0.0
                for j in 0..<lk { sum += weights[j] * v.values[((b * lk + j) * heads + h) * d + e] }
                out[((b * lq + i) * heads + h) * d + e] = sum
            }
        } } }
        return Value(shape: q.shape, values: out)
    }
}
