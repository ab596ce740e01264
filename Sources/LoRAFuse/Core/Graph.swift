/// A value in a graph under construction: the id of the node that produces it, and its type.
public struct Tensor: Sendable, Hashable, CustomStringConvertible {
    public let id: Int
    public let type: TensorType
    public var shape: Shape { type.shape }
    public var dtype: DType { type.dtype }
    public var description: String { "%\(id): \(type)" }
}

/// One node: an op, the nodes it reads, and the type it produces.
public struct Node: Sendable, Hashable {
    public let id: Int
    public let op: Op
    public let inputs: [Int]
    public let type: TensorType
    /// Optional label for reports (e.g. `double_blocks.0.attn.to_q`).
    public var label: String?
}

/// A compute graph in topological order (a node only reads earlier nodes). Models build
/// it with the methods below, which check shapes as they go; backends execute it.
public struct Graph: Sendable {
    public private(set) var nodes: [Node] = []
    /// The weight each `.parameter` node reads, by node id.
    public private(set) var parameters: [Int: WeightHandle] = [:]
    /// The weight sets those handles belong to (the graph keeps them alive).
    public private(set) var weightSets: [WeightSet.ID: WeightSet] = [:]
    /// Weights built with the graph (position ids, widened norm vectors), bound without a set.
    private var constants: WeightSet?
    /// The nodes whose values an execution returns, in order.
    public private(set) var outputs: [Int] = []

    /// An empty graph.
    public init() {}

    /// The node that produces `tensor`.
    public func node(_ tensor: Tensor) -> Node { nodes[tensor.id] }

    /// Names of the `.input` nodes with their expected types.
    public var inputTypes: [(name: String, type: TensorType)] {
        nodes.compactMap { node in
            if case let .input(name) = node.op { return (name, node.type) }
            return nil
        }
    }

    /// Adds `tensor` to the graph's outputs (returned in the order marked).
    public mutating func markOutput(_ tensor: Tensor) { outputs.append(tensor.id) }

    /// Attaches a label (used by reports) to the node producing `tensor`.
    public mutating func label(_ tensor: Tensor, _ text: String) { nodes[tensor.id].label = text }

    private mutating func append(_ op: Op, _ inputs: [Tensor], _ type: TensorType) -> Tensor {
        let id = nodes.count
        nodes.append(Node(id: id, op: op, inputs: inputs.map(\.id), type: type))
        return Tensor(id: id, type: type)
    }

    /// Appends a copy of `node` of `source` (already checked there) reading `inputs`; a
    /// parameter keeps its binding. Graph rewrites and the scheduler's partitions use it.
    mutating func copy(_ node: Node, from source: Graph, inputs: [Tensor]) -> Tensor {
        let tensor = append(node.op, inputs, node.type)
        nodes[tensor.id].label = node.label
        if case .parameter = node.op, let handle = source.parameters[node.id] {
            parameters[tensor.id] = handle
            weightSets[handle.set] = source.weightSets[handle.set]
        }
        return tensor
    }

    private func requireFloat32(_ tensor: Tensor, _ op: String, _ role: String) throws(GraphError) {
        guard tensor.dtype == .float32 else {
            throw GraphError(op: op, "\(role) must be F32, got \(tensor.type) (cast it first)")
        }
    }

    // MARK: Leaves

    /// A value bound at execution time by `name` (the inputs dictionary of `Backend.execute`).
    public mutating func input(_ name: String, _ shape: Shape, _ dtype: DType = .float32) -> Tensor {
        append(.input(name: name), [], TensorType(shape, dtype))
    }

    /// A weight of `set` (a model's weights: see `WeightSet`), registered there under `name`.
    /// Without a set it goes to the graph's own constants, a set made with the graph.
    public mutating func parameter(_ name: String, _ value: HostTensor, in set: WeightSet? = nil) -> Tensor {
        let owner: WeightSet
        if let set {
            owner = set
        } else {
            if constants == nil { constants = WeightSet(name: "graph constants") }
            owner = constants!
        }
        return parameter(name, owner.register(name, value), in: owner)
    }

    private mutating func parameter(_ name: String, _ handle: WeightHandle, in set: WeightSet) -> Tensor {
        let tensor = append(.parameter(name: name), [], set.tensor(handle).type)
        parameters[tensor.id] = handle
        weightSets[set.id] = set
        return tensor
    }

    /// The value of parameter node `id`.
    public func weight(_ id: Int) -> HostTensor {
        let handle = parameters[id]!
        return weightSets[handle.set]!.tensor(handle)
    }

    /// The weight sets the parameters of `graphs` belong to, each once, oldest first.
    public static func weightSets(of graphs: [Graph]) -> [WeightSet] {
        var sets: [WeightSet.ID: WeightSet] = [:]
        for graph in graphs { sets.merge(graph.weightSets) { first, _ in first } }
        return sets.values.sorted { $0.id.raw < $1.id.raw }
    }

    // MARK: Linear algebra

    /// `a · b` over the last two axes, with batch axes broadcast; `b` may be a narrow weight
    /// (F16, BF16, F8) or, as a Linear's weight `[n, k]` with `transposeB`, a GGUF
    /// block-quantized one whose rows are whole blocks.
    public mutating func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false) throws(GraphError) -> Tensor {
        let op = Op.matmul(transposeA: transposeA, transposeB: transposeB)
        try requireFloat32(a, op.summary, "a")
        if b.dtype.isBlockQuantized {
            guard b.shape.rank == 2, transposeB, b.shape.last % b.dtype.blockElements == 0 else {
                throw GraphError(op: op.summary, "a \(b.dtype.name) b must be a weight [n, k] used transposed with k a multiple of \(b.dtype.blockElements), got \(b.type)")
            }
        } else if !DType.matrixTypes.contains(b.dtype) {
            throw GraphError(op: op.summary, "b must be F32, F16, BF16, F8_E4M3, F8_E5M2 or a GGUF block type, got \(b.type)")
        }
        guard a.shape.rank >= 2, b.shape.rank >= 2 else {
            throw GraphError(op: op.summary, "operands need rank ≥ 2, got a \(a.shape) and b \(b.shape)")
        }
        let aDims = a.shape.dimensions, bDims = b.shape.dimensions
        let (m, kA) = transposeA ? (aDims[aDims.count - 1], aDims[aDims.count - 2]) : (aDims[aDims.count - 2], aDims[aDims.count - 1])
        let (kB, n) = transposeB ? (bDims[bDims.count - 1], bDims[bDims.count - 2]) : (bDims[bDims.count - 2], bDims[bDims.count - 1])
        guard kA == kB else {
            throw GraphError(op: op.summary, "inner dimensions differ: a \(a.shape) has K=\(kA), b \(b.shape) has K=\(kB)")
        }
        guard let batch = Self.broadcast(Array(aDims.dropLast(2)), Array(bDims.dropLast(2))) else {
            throw GraphError(op: op.summary, "batch dimensions of a \(a.shape) and b \(b.shape) do not broadcast")
        }
        return append(op, [a, b], TensorType(Shape(batch + [m, n])))
    }

    /// `x · Wᵀ (+ bias)`: a PyTorch `Linear` with weight [out, in].
    public mutating func linear(_ x: Tensor, weight: Tensor, bias: Tensor? = nil) throws(GraphError) -> Tensor {
        let product = try matmul(x, weight, transposeB: true)
        guard let bias else { return product }
        return try add(product, bias)
    }

    /// `y + scale · (x · downᵀ) · upᵀ`: LoRA factors `down` (A) [r, K] and `up` (B) [N, r]
    /// applied beside the Linear whose output for `x` [..., K] is `y` [..., N].
    public mutating func lowRankUpdate(_ y: Tensor, input x: Tensor, down: Tensor, up: Tensor, scale: Float) throws(GraphError) -> Tensor {
        let op = Op.lowRankUpdate(scale: scale)
        try requireFloat32(y, op.summary, "y")
        try requireFloat32(x, op.summary, "x")
        for (factor, role) in [(down, "down"), (up, "up")] {
            guard DType.weightTypes.contains(factor.dtype), factor.shape.rank == 2 else {
                throw GraphError(op: op.summary, "\(role) must be a matrix of F32, F16 or BF16, got \(factor.type)")
            }
        }
        guard x.shape.rank >= 1, y.shape.rank == x.shape.rank,
              Array(x.shape.dimensions.dropLast()) == Array(y.shape.dimensions.dropLast()) else {
            throw GraphError(op: op.summary, "x \(x.shape) and y \(y.shape) must agree on every axis but the last")
        }
        guard down.dtype == up.dtype else {
            throw GraphError(op: op.summary, "down \(down.type) and up \(up.type) must share a dtype (cast one)")
        }
        let rank = down.shape[0]
        guard rank >= 1, down.shape[1] == x.shape.last, up.shape[0] == y.shape.last, up.shape[1] == rank else {
            throw GraphError(op: op.summary,
                             "down \(down.shape) must be [r, \(x.shape.last)] and up \(up.shape) [\(y.shape.last), r] for x \(x.shape), y \(y.shape)")
        }
        return append(op, [y, x, down, up], y.type)
    }

    /// [Σ of the `k` largest |x| over all `tensors`, Σ of all |x|] (K-LoRA, Eqs. 1–4 and 9).
    public mutating func topKAbsSum(_ tensors: [Tensor], k: Int) throws(GraphError) -> Tensor {
        let op = Op.topKAbsSum(k: k)
        guard !tensors.isEmpty else { throw GraphError(op: op.summary, "needs at least one tensor") }
        for tensor in tensors { try requireFloat32(tensor, op.summary, "input") }
        let total = tensors.reduce(0) { $0 + $1.shape.elementCount }
        guard k >= 1, k <= total else {
            throw GraphError(op: op.summary, "k must be in 1...\(total) (the number of entries), got \(k)")
        }
        return append(op, tensors, TensorType([2]))
    }

    /// [Σ of the `k` largest |ΔW|, Σ |ΔW|] over the updates ΔWᵢ = scaleᵢ · upᵢ · downᵢ of
    /// `factors` (up [out, r], down [r, in]), without a node for any ΔW (K-LoRA's plan).
    public mutating func lowRankTopKAbsSum(_ factors: [(up: Tensor, down: Tensor, scale: Float)], k: Int) throws(GraphError) -> Tensor {
        let op = Op.lowRankTopKAbsSum(k: k, scales: factors.map(\.scale))
        guard !factors.isEmpty else { throw GraphError(op: op.summary, "needs at least one (up, down) pair") }
        var entries = 0
        for (up, down, _) in factors {
            guard DType.weightTypes.contains(up.dtype), DType.weightTypes.contains(down.dtype), up.shape.rank == 2, down.shape.rank == 2,
                  up.shape[1] == down.shape[0] else {
                throw GraphError(op: op.summary, "up \(up.type) and down \(down.type) must be [out, r] and [r, in] matrices of F32, F16 or BF16")
            }
            entries += up.shape[0] * down.shape[1]
        }
        guard k >= 1, k <= entries else {
            throw GraphError(op: op.summary, "k must be in 1...\(entries) (the number of entries), got \(k)")
        }
        return append(op, factors.flatMap { [$0.up, $0.down] }, TensorType([2]))
    }

    /// AutoLoRA's gate: `base` y₀ [..., D], `parameters` [9, D] (see `Op.loraGate`), LoRA
    /// outputs `loraOutputs` (1 to 8 of [..., D]).
    public mutating func loraGate(_ base: Tensor, parameters: Tensor, loraOutputs: [Tensor], epsilon: Float = 1e-5) throws(GraphError) -> Tensor {
        let op = Op.loraGate(epsilon: epsilon)
        try requireFloat32(base, op.summary, "base")
        try requireFloat32(parameters, op.summary, "parameters")
        guard (1...Self.maximumGateInputs).contains(loraOutputs.count) else {
            throw GraphError(op: op.summary, "needs 1 to \(Self.maximumGateInputs) LoRA outputs, got \(loraOutputs.count)")
        }
        guard base.shape.rank >= 1, parameters.shape.dimensions == [9, base.shape.last] else {
            throw GraphError(op: op.summary, "parameters must be [9, \(base.shape.last)] for base \(base.shape), got \(parameters.shape)")
        }
        for output in loraOutputs {
            try requireFloat32(output, op.summary, "LoRA output")
            guard output.shape == base.shape else {
                throw GraphError(op: op.summary, "LoRA output \(output.shape) must match base \(base.shape)")
            }
        }
        return append(op, [base, parameters] + loraOutputs, base.type)
    }

    /// `loraGate` of N LoRAs whose outputs dᵢ = u[:, Rᵢ's columns] · up[:, Rᵢ's columns]ᵀ are
    /// formed inside the op (see `Op.lowRankGate`): `lowRank` u [..., ΣR], `up` [D, ΣR].
    public mutating func lowRankGate(_ base: Tensor, parameters: Tensor, lowRank: Tensor, up: Tensor, ranks: [Int],
                                     epsilon: Float = 1e-5) throws(GraphError) -> Tensor {
        let op = Op.lowRankGate(epsilon: epsilon, ranks: ranks)
        for (tensor, role) in [(base, "base"), (parameters, "parameters"), (lowRank, "low-rank input"), (up, "up")] {
            try requireFloat32(tensor, op.summary, role)
        }
        guard (1...Self.maximumGateInputs).contains(ranks.count), ranks.allSatisfy({ $0 >= 1 }) else {
            throw GraphError(op: op.summary, "needs 1 to \(Self.maximumGateInputs) LoRAs of rank ≥ 1, got ranks \(ranks)")
        }
        let total = ranks.reduce(0, +), width = base.shape.last
        guard base.shape.rank >= 1, parameters.shape.dimensions == [9, width] else {
            throw GraphError(op: op.summary, "parameters must be [9, \(width)] for base \(base.shape), got \(parameters.shape)")
        }
        let expected = Shape(Array(base.shape.dimensions.dropLast()) + [total])
        guard lowRank.shape == expected, up.shape.dimensions == [width, total] else {
            throw GraphError(op: op.summary, "low-rank input \(lowRank.shape) must be \(expected) and up \(up.shape) [\(width), \(total)] for base \(base.shape) and ranks \(ranks)")
        }
        return append(op, [base, parameters, lowRank, up], base.type)
    }

    /// The most LoRAs one gate node takes.
    public static let maximumGateInputs = 8

    // MARK: Element-wise

    /// numpy broadcasting of two shapes (aligned at the last axis), or nil.
    public static func broadcast(_ a: [Int], _ b: [Int]) -> [Int]? {
        let rank = max(a.count, b.count)
        var result = [Int](repeating: 1, count: rank)
        for axis in 0..<rank {
            let x = axis - (rank - a.count) >= 0 ? a[axis - (rank - a.count)] : 1
            let y = axis - (rank - b.count) >= 0 ? b[axis - (rank - b.count)] : 1
            if x == y || y == 1 { result[axis] = x } else if x == 1 { result[axis] = y } else { return nil }
        }
        return result
    }

    /// An element-wise `a ∘ b` with numpy broadcasting.
    public mutating func binary(_ op: BinaryOperator, _ a: Tensor, _ b: Tensor) throws(GraphError) -> Tensor {
        try requireFloat32(a, op.rawValue, "lhs")
        try requireFloat32(b, op.rawValue, "rhs")
        guard let shape = Self.broadcast(a.shape.dimensions, b.shape.dimensions) else {
            throw GraphError(op: op.rawValue, "shapes \(a.shape) and \(b.shape) do not broadcast")
        }
        return append(.binary(op), [a, b], TensorType(Shape(shape)))
    }

    /// `a + b`, broadcast.
    public mutating func add(_ a: Tensor, _ b: Tensor) throws(GraphError) -> Tensor { try binary(.add, a, b) }
    /// `a − b`, broadcast.
    public mutating func sub(_ a: Tensor, _ b: Tensor) throws(GraphError) -> Tensor { try binary(.sub, a, b) }
    /// `a · b` element-wise, broadcast.
    public mutating func mul(_ a: Tensor, _ b: Tensor) throws(GraphError) -> Tensor { try binary(.mul, a, b) }
    /// `a / b`, broadcast.
    public mutating func div(_ a: Tensor, _ b: Tensor) throws(GraphError) -> Tensor { try binary(.div, a, b) }

    /// `factor · x`.
    public mutating func scale(_ x: Tensor, _ factor: Float) throws(GraphError) -> Tensor {
        try requireFloat32(x, "scale", "input")
        return append(.scale(factor), [x], x.type)
    }

    /// `function` applied to every element of `x`.
    public mutating func unary(_ function: UnaryFunction, _ x: Tensor) throws(GraphError) -> Tensor {
        try requireFloat32(x, function.rawValue, "input")
        return append(.unary(function), [x], x.type)
    }

    /// GELU, exact (erf) or with the tanh approximation.
    public mutating func gelu(_ x: Tensor, approximateTanh: Bool = false) throws(GraphError) -> Tensor {
        try unary(approximateTanh ? .geluTanh : .gelu, x)
    }
    /// `x · sigmoid(x)`.
    public mutating func silu(_ x: Tensor) throws(GraphError) -> Tensor { try unary(.silu, x) }
    /// `1 / (1 + e^−x)`.
    public mutating func sigmoid(_ x: Tensor) throws(GraphError) -> Tensor { try unary(.sigmoid, x) }

    // MARK: Row-wise

    /// Softmax over the last axis.
    public mutating func softmax(_ x: Tensor) throws(GraphError) -> Tensor {
        try requireFloat32(x, "softmax", "input")
        guard x.shape.rank >= 1 else { throw GraphError(op: "softmax", "needs rank ≥ 1, got \(x.shape)") }
        return append(.softmax, [x], x.type)
    }

    private func checkRowVector(_ vector: Tensor, width: Int, _ op: String, _ role: String) throws(GraphError) {
        try requireFloat32(vector, op, role)
        guard vector.shape.dimensions == [width] else {
            throw GraphError(op: op, "\(role) must be [\(width)] to match the last axis, got \(vector.shape)")
        }
    }

    /// LayerNorm over the last axis; pass both `weight` and `bias` for the affine form.
    public mutating func layerNorm(_ x: Tensor, weight: Tensor? = nil, bias: Tensor? = nil, epsilon: Float = 1e-5) throws(GraphError) -> Tensor {
        let op = Op.layerNorm(epsilon: epsilon)
        try requireFloat32(x, op.summary, "input")
        guard x.shape.rank >= 1 else { throw GraphError(op: op.summary, "needs rank ≥ 1, got \(x.shape)") }
        switch (weight, bias) {
        case (nil, nil):
            return append(op, [x], x.type)
        case let (weight?, bias?):
            try checkRowVector(weight, width: x.shape.last, op.summary, "weight")
            try checkRowVector(bias, width: x.shape.last, op.summary, "bias")
            return append(op, [x, weight, bias], x.type)
        default:
            throw GraphError(op: op.summary, "the affine form needs both weight and bias")
        }
    }

    /// RMSNorm over the last axis, times `weight` when given.
    public mutating func rmsNorm(_ x: Tensor, weight: Tensor? = nil, epsilon: Float = 1e-6) throws(GraphError) -> Tensor {
        let op = Op.rmsNorm(epsilon: epsilon)
        try requireFloat32(x, op.summary, "input")
        guard x.shape.rank >= 1 else { throw GraphError(op: op.summary, "needs rank ≥ 1, got \(x.shape)") }
        guard let weight else { return append(op, [x], x.type) }
        try checkRowVector(weight, width: x.shape.last, op.summary, "weight")
        return append(op, [x, weight], x.type)
    }

    // MARK: Attention

    /// FLUX's rotary embedding of `x` [B, L, H, D] with per-position `cos`/`sin` tables [L, D/2] (pairs of adjacent elements rotated).
    public mutating func rotaryEmbedding(_ x: Tensor, cos: Tensor, sin: Tensor) throws(GraphError) -> Tensor {
        let op = "rotaryEmbedding"
        try requireFloat32(x, op, "x")
        try requireFloat32(cos, op, "cos")
        try requireFloat32(sin, op, "sin")
        guard x.shape.rank == 4, x.shape[3] % 2 == 0 else {
            throw GraphError(op: op, "x must be [B, L, H, D] with even D, got \(x.shape)")
        }
        let expected = Shape([x.shape[1], x.shape[3] / 2])
        guard cos.shape == expected, sin.shape == expected else {
            throw GraphError(op: op, "cos and sin must be \(expected) for x \(x.shape), got \(cos.shape) and \(sin.shape)")
        }
        return append(.rotaryEmbedding, [x, cos, sin], x.type)
    }

    /// Scaled dot-product attention (`scale` defaults to 1/√D).
    public mutating func attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor? = nil,
                                   scale: Float? = nil, causal: Bool = false) throws(GraphError) -> Tensor {
        let op = Op.attention(scale: scale ?? 1 / Float(query.shape.last).squareRoot(), causal: causal)
        for (tensor, role) in [(query, "query"), (key, "key"), (value, "value")] {
            try requireFloat32(tensor, op.summary, role)
            guard tensor.shape.rank == 4 else {
                throw GraphError(op: op.summary, "\(role) must be [B, L, H, D], got \(tensor.shape)")
            }
        }
        let q = query.shape, k = key.shape, v = value.shape
        guard k == v, q[0] == k[0], q[2] == k[2], q[3] == k[3] else {
            throw GraphError(op: op.summary, "query \(q), key \(k) and value \(v) disagree (need [B, Lq, H, D] and [B, Lk, H, D])")
        }
        var inputs = [query, key, value]
        if let mask {
            try requireFloat32(mask, op.summary, "mask")
            let lq = q[1], lk = k[1]
            let valid = mask.shape.dimensions == [lq, lk] ||
                (mask.shape.rank == 4 && [1, q[0]].contains(mask.shape[0]) && [1, q[2]].contains(mask.shape[1])
                    && mask.shape[2] == lq && mask.shape[3] == lk)
            guard valid else {
                throw GraphError(op: op.summary, "mask must be [\(lq), \(lk)] or [B|1, H|1, \(lq), \(lk)], got \(mask.shape)")
            }
            inputs.append(mask)
        }
        return append(op, inputs, TensorType(q))
    }

    /// 2-D convolution with stride 1 and zero padding `padding` on every side.
    public mutating func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, padding: Int = 0) throws(GraphError) -> Tensor {
        let op = Op.conv2d(padding: padding)
        try requireFloat32(x, op.summary, "x")
        guard x.shape.rank == 4, weight.shape.rank == 4, DType.matrixTypes.contains(weight.dtype) else {
            throw GraphError(op: op.summary, "needs x [B, C, H, W] and weight [O, C, kh, kw] (F32/F16/BF16/F8), got \(x.type) and \(weight.type)")
        }
        let (c, h, w) = (x.shape[1], x.shape[2], x.shape[3])
        let (o, kh, kw) = (weight.shape[0], weight.shape[2], weight.shape[3])
        let outHeight = h + 2 * padding - kh + 1, outWidth = w + 2 * padding - kw + 1
        guard weight.shape[1] == c, padding >= 0, outHeight > 0, outWidth > 0 else {
            throw GraphError(op: op.summary, "weight \(weight.shape) does not fit x \(x.shape) with padding \(padding)")
        }
        var inputs = [x, weight]
        if let bias {
            try requireFloat32(bias, op.summary, "bias")
            guard bias.shape.dimensions == [o] else { throw GraphError(op: op.summary, "bias must be [\(o)], got \(bias.shape)") }
            inputs.append(bias)
        }
        return append(op, inputs, TensorType([x.shape[0], o, outHeight, outWidth]))
    }

    // MARK: Layout

    /// `x` viewed with another shape of the same element count (no copy).
    public mutating func reshape(_ x: Tensor, _ shape: Shape) throws(GraphError) -> Tensor {
        guard shape.checkedElementCount == x.shape.elementCount else {
            throw GraphError(op: "reshape", "cannot reshape \(x.shape) (\(x.shape.elementCount) elements) to \(shape)")
        }
        return append(.reshape(shape), [x], TensorType(shape, x.dtype))
    }

    /// `x` with its axes reordered: output axis i is input axis `order[i]`.
    public mutating func permute(_ x: Tensor, _ order: [Int]) throws(GraphError) -> Tensor {
        guard order.sorted() == Array(0..<x.shape.rank) else {
            throw GraphError(op: "permute", "\(order) is not a permutation of the axes of \(x.shape)")
        }
        return append(.permute(order), [x], TensorType(Shape(order.map { x.shape[$0] }), x.dtype))
    }

    /// Elements `start..<end` of `x` along `axis`.
    public mutating func slice(_ x: Tensor, axis: Int, start: Int, end: Int) throws(GraphError) -> Tensor {
        guard let resolved = x.shape.normalizedAxis(axis) else {
            throw GraphError(op: "slice", "axis \(axis) out of range for \(x.shape)")
        }
        guard 0 <= start, start <= end, end <= x.shape[resolved] else {
            throw GraphError(op: "slice", "range \(start)..<\(end) outside axis \(resolved) of \(x.shape)")
        }
        var dimensions = x.shape.dimensions
        dimensions[resolved] = end - start
        return append(.slice(axis: resolved, start: start, end: end), [x], TensorType(Shape(dimensions), x.dtype))
    }

    /// `tensors` joined along `axis` (equal shapes elsewhere).
    public mutating func concat(_ tensors: [Tensor], axis: Int) throws(GraphError) -> Tensor {
        guard let first = tensors.first else { throw GraphError(op: "concat", "needs at least one tensor") }
        guard let resolved = first.shape.normalizedAxis(axis) else {
            throw GraphError(op: "concat", "axis \(axis) out of range for \(first.shape)")
        }
        var total = 0
        for tensor in tensors {
            var expected = first.shape.dimensions
            var actual = tensor.shape.dimensions
            guard tensor.dtype == first.dtype, actual.count == expected.count else {
                throw GraphError(op: "concat", "\(tensor.type) does not match \(first.type)")
            }
            expected[resolved] = 0
            actual[resolved] = 0
            guard expected == actual else {
                throw GraphError(op: "concat", "shapes \(first.shape) and \(tensor.shape) differ outside axis \(resolved)")
            }
            total += tensor.shape[resolved]
        }
        var dimensions = first.shape.dimensions
        dimensions[resolved] = total
        return append(.concat(axis: resolved), tensors, TensorType(Shape(dimensions), first.dtype))
    }

    /// Rows of `table` [V, D] picked by integer `ids` (I32 or I64); an id out of range is an
    /// execution error. A block-quantized table (a GGUF T5's `token_embd`) has its rows dequantized.
    public mutating func embedding(table: Tensor, ids: Tensor) throws(GraphError) -> Tensor {
        guard table.shape.rank == 2, DType.matrixTypes.contains(table.dtype)
                || (table.dtype.isBlockQuantized && table.shape.last % table.dtype.blockElements == 0) else {
            throw GraphError(op: "embedding", "table must be [V, D] of F32, F16, BF16, F8 or a GGUF block type (D whole blocks), got \(table.type)")
        }
        guard [.int32, .int64].contains(ids.dtype) else {
            throw GraphError(op: "embedding", "ids must be I32 or I64, got \(ids.type)")
        }
        return append(.embedding, [table, ids], TensorType(Shape(ids.shape.dimensions + [table.shape[1]])))
    }

    /// `x` converted to `dtype` (rounding to nearest even when narrowing).
    public mutating func cast(_ x: Tensor, to dtype: DType) throws(GraphError) -> Tensor {
        guard x.dtype.isFloatingPoint || x.dtype.isInteger, [.float32, .float16, .bfloat16].contains(dtype) else {
            throw GraphError(op: "cast", "cannot cast \(x.type) to \(dtype.name) (targets: F32, F16, BF16)")
        }
        if x.dtype == dtype { return x }
        return append(.cast(dtype), [x], TensorType(x.shape, dtype))
    }
}
