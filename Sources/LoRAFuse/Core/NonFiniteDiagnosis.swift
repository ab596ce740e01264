/// A model output with NaN or infinity is an error, never an image or a sample. The error
/// names the first node of the graph whose value is not finite, found by running the graph
/// again with every intermediate kept (what the parity reports use), so the user sees
/// where it started: a weight, a LoRA, an overflowing activation.
public struct NonFiniteOutput: Error, Sendable, CustomStringConvertible {
    /// What produced it, e.g. "step 3 of 4: the transformer".
    public let stage: String
    /// "%123 matmul … (label)", or why no node is named.
    public let origin: String

    /// A non-finite output of `stage` first produced by the node `origin` describes.
    public init(stage: String, origin: String) {
        self.stage = stage
        self.origin = origin
    }

    public var description: String { "\(stage) produced non-finite values (NaN or infinity); the first non-finite node: \(origin)" }
}

/// Finds the first node of a graph that produced NaN or infinity, by re-running it with intermediates kept.
public enum NonFiniteDiagnosis {
    /// Intermediates are kept only when they fit this many bytes (a full-size FLUX forward
    /// would need tens of GB).
    public static let intermediateByteLimit = 2 << 30

    /// Throws `NonFiniteOutput` when any output is not finite.
    public static func check(_ outputs: [HostTensor], stage: String, graph: Graph, inputs: [String: HostTensor],
                             on backend: any Backend) throws {
        guard outputs.contains(where: { !$0.isAllFinite }) else { return }
        throw NonFiniteOutput(stage: stage, origin: firstNode(graph, inputs: inputs, on: backend))
    }

    /// The first node (in execution order) whose value holds a NaN or an infinity.
    public static func firstNode(_ graph: Graph, inputs: [String: HostTensor], on backend: any Backend) -> String {
        var bytes = 0
        for node in graph.nodes {
            let (sum, overflow) = bytes.addingReportingOverflow(node.type.shape.elementCount.multipliedReportingOverflow(by: 4).partialValue)
            guard !overflow else { return "not searched (the intermediates are too large to keep)" }
            bytes = sum
        }
        guard bytes <= intermediateByteLimit else {
            return "not searched (keeping every intermediate would take \(bytes) bytes; a smaller input shows it)"
        }
        guard let result = try? backend.execute(graph, inputs: inputs, options: ExecutionOptions(keepIntermediates: true)) else {
            return "not searched (the diagnostic run failed)"
        }
        for node in graph.nodes {
            guard let value = result.intermediates[node.id], !value.isAllFinite else { continue }
            let label = node.label.map { " (\($0))" } ?? ""
            return "%\(node.id) \(node.op.summary)\(label) → \(node.type)"
        }
        return "none among the intermediates (the backend's second run was finite)"
    }
}
