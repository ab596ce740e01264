/// The fused ops written as primitive ops, for a backend that lacks the fused kernel.
///
/// `BackendScheduler` uses these when a backend refuses a fused node but runs every node of
/// its decomposition; the result is the same math (up to float32 rounding order), at the
/// cost of intermediates the fused kernel keeps on chip. `topKAbsSum` is itself primitive
/// (a selection): a backend without it hands the node to the fallback backend.
public enum Decomposition {
    /// Whether `op` has a primitive form.
    public static func exists(for op: Op) -> Bool {
        switch op {
        case .lowRankUpdate, .loraGate, .lowRankGate, .lowRankTopKAbsSum: true
        default: false
        }
    }

    /// Appends the primitive form of `node` to `graph`, reading `inputs` (tensors of `graph`
    /// standing for the node's inputs, in order). Returns the tensor equal to the node's
    /// value, or nil when the op has no decomposition.
    public static func expand(_ node: Node, inputs: [Tensor], into graph: inout Graph) throws(GraphError) -> Tensor? {
        switch node.op {
        case let .lowRankUpdate(scale):
            // y + scale · (x · downᵀ) · upᵀ
            let low = try graph.matmul(inputs[1], inputs[2], transposeB: true)
            let delta = try graph.matmul(low, inputs[3], transposeB: true)
            return try graph.add(inputs[0], scale == 1 ? delta : graph.scale(delta, scale))
        case let .loraGate(epsilon):
            return try gate(base: inputs[0], parameters: inputs[1], loraOutputs: Array(inputs[2...]), epsilon: epsilon, in: &graph)
        case let .lowRankGate(epsilon, ranks):
            let (lowRank, up) = (inputs[2], inputs[3])
            var outputs: [Tensor] = []
            var offset = 0
            for rank in ranks {
                let u = try graph.slice(lowRank, axis: -1, start: offset, end: offset + rank)
                let b = try graph.slice(up, axis: 1, start: offset, end: offset + rank)
                outputs.append(try graph.matmul(u, b, transposeB: true))
                offset += rank
            }
            return try gate(base: inputs[0], parameters: inputs[1], loraOutputs: outputs, epsilon: epsilon, in: &graph)
        case let .lowRankTopKAbsSum(k, scales):
            var updates: [Tensor] = []
            for (index, scale) in scales.enumerated() {
                let up = try graph.cast(inputs[2 * index], to: .float32)
                let delta = try graph.matmul(up, inputs[2 * index + 1])
                updates.append(scale == 1 ? delta : try graph.scale(delta, scale))
            }
            return try graph.topKAbsSum(updates, k: k)
        default:
            return nil
        }
    }

    /// AutoLoRA's gate (`Op.loraGate`) from layerNorm, mul, add and sigmoid nodes.
    private static func gate(base: Tensor, parameters: Tensor, loraOutputs: [Tensor], epsilon: Float,
                             in graph: inout Graph) throws(GraphError) -> Tensor {
        let width = base.shape.last
        func row(_ index: Int) throws(GraphError) -> Tensor {
            try graph.reshape(graph.slice(parameters, axis: 0, start: index, end: index + 1), [width])
        }
        let (weightBase, weightLoRA, weightCross, weightOut, bias) = (try row(0), try row(1), try row(2), try row(3), try row(4))
        let normedBase = try graph.layerNorm(base, weight: row(5), bias: row(6), epsilon: epsilon)
        let (normWeight, normBias) = (try row(7), try row(8))
        var sum = base
        for output in loraOutputs {
            let normed = try graph.layerNorm(output, weight: normWeight, bias: normBias, epsilon: epsilon)
            var logit = try graph.add(graph.mul(normedBase, weightBase), graph.mul(normed, weightLoRA))
            logit = try graph.add(logit, graph.mul(graph.mul(normedBase, normed), weightCross))
            let gate = try graph.sigmoid(graph.add(logit, bias))
            sum = try graph.add(sum, graph.mul(graph.mul(gate, output), weightOut))
        }
        return sum
    }
}
