import Foundation

/// Where the nodes of one execution ran: what a `BackendScheduler` decided, for reports.
public struct ScheduleReport: Sendable, Hashable {
    /// A node the primary backend declined, with the backend that ran it and the primary's reason.
    public struct Fallback: Sendable, Hashable {
        /// The node's id in the graph that was given to `execute`.
        public var node: Int
        public var op: String
        /// Why the primary backend refused it.
        public var reason: String
    }

    /// One partition: the backend that ran it and how many nodes it held.
    public struct Partition: Sendable, Hashable {
        public var backend: String
        public var nodes: Int
    }

    /// The partitions in order.
    public var partitions: [Partition] = []
    /// Their backends in order.
    public var partitionBackends: [String] { partitions.map(\.backend) }
    /// Nodes the primary backend refused that ran on the fallback backend.
    public var fallbacks: [Fallback] = []
    /// Fused nodes the primary backend refused and ran as their primitive decomposition.
    public var decomposed: [Fallback] = []
    /// Bytes copied between the backends' partitions (through host memory).
    public var transferredBytes = 0

    public init() {}
}

/// Runs graphs on a primary backend and sends the nodes it cannot run elsewhere, the way
/// ggml's `ggml_backend_sched` splits a graph between a GPU backend and the CPU:
///
/// 1. every node is offered to the primary backend (`supports(_:in:)`);
/// 2. a fused node it refuses (the LoRA update, the AutoLoRA gates, the low-rank Top-K sum)
///    is replaced by its `Decomposition` when the primary backend runs every node of it;
/// 3. any other refused node goes to the fallback backend (normally the CPU backend, which
///    runs every op);
/// 4. the graph is cut into partitions of consecutive nodes on one backend; the values that
///    cross a cut are copied through host memory.
///
/// A graph the primary backend runs whole is handed to it unchanged (one `supports` pass
/// over its nodes, no copy), so the scheduler costs next to nothing when no fallback is needed. It is itself a `Backend`: pipelines take it wherever
/// they take a backend.
public final class BackendScheduler: Backend, @unchecked Sendable {
    public let primary: any Backend
    public let fallback: any Backend

    public var name: String { primary.name }
    public var device: DeviceInfo { primary.device }
    public var capabilities: BackendCapabilities {
        BackendCapabilities(ops: primary.capabilities.ops.union(fallback.capabilities.ops),
                            weightTypes: primary.capabilities.weightTypes.union(fallback.capabilities.weightTypes))
    }

    /// A scheduler that runs what `primary` supports on it and the rest on `fallback` (the CPU backend).
    public init(primary: any Backend, fallback: any Backend) {
        self.primary = primary
        self.fallback = fallback
    }

    public func upload(_ tensor: HostTensor) throws -> any BackendBuffer { try primary.upload(tensor) }
    public func download(_ buffer: any BackendBuffer) throws -> HostTensor { try primary.download(buffer) }
    /// Weights go to the primary backend; partitions on the fallback (the CPU backend)
    /// read them in place.
    public func makeResident(_ parts: [(set: WeightSet, handles: [WeightHandle])],
                             progress: (@Sendable (Int, Int) -> Void)?) throws -> ResidentWeights {
        try primary.makeResident(parts, progress: progress)
    }

    /// The primary backend's memory.
    public func memory() -> BackendMemory { primary.memory() }

    /// Every node is supported: what the primary declines, the fallback runs.
    public func supports(_ node: Node, in graph: Graph) -> NodeSupport {
        let own = primary.supports(node, in: graph)
        if own.isSupported { return own }
        return fallback.supports(node, in: graph)
    }

    /// How `graph` would run: the rewritten graph, where each of its nodes runs and the report.
    public func plan(_ graph: Graph) throws -> Schedule {
        try Schedule(graph: graph, primary: primary, fallback: fallback)
    }

    /// Plans `graph` (partitions, decompositions) and runs it; the result's `schedule` says how it was split.
    public func execute(_ graph: Graph, inputs: [String: HostTensor], options: ExecutionOptions) throws -> ExecutionResult {
        let schedule = try plan(graph)
        if schedule.runsWholeOnPrimary {
            var result = try primary.execute(graph, inputs: inputs, options: options)
            result.schedule = schedule.report
            return result
        }
        return try schedule.run(inputs: inputs, options: options, original: graph)
    }
}

/// A graph cut into partitions for a primary and a fallback backend (see `BackendScheduler`).
public struct Schedule: @unchecked Sendable {
    enum Placement { case free, primary, fallback }

    /// The graph after decompositions; the partitions index into it.
    public private(set) var graph: Graph
    /// For each node of `graph`, the original node it computes (or helps compute).
    private var origin: [Int] = []
    /// For each original node, the node of `graph` holding its value.
    private var representative: [Int] = []
    private var placement: [Placement] = []
    private var partitions: [(backend: any Backend, nodes: [Int])] = []
    public private(set) var report = ScheduleReport()

    /// True when the primary backend runs the original graph as it is.
    public var runsWholeOnPrimary: Bool { report.decomposed.isEmpty && report.fallbacks.isEmpty }

    init(graph original: Graph, primary: any Backend, fallback: any Backend) throws {
        func isLeaf(_ node: Node) -> Bool {
            switch node.op {
            case .input, .parameter: true
            default: false
            }
        }
        let support = original.nodes.map { isLeaf($0) ? .supported : primary.supports($0, in: original) }
        if support.allSatisfy(\.isSupported) {
            // The common case: no copy of the graph, one partition on the primary.
            graph = original
            placement = original.nodes.map { isLeaf($0) ? .free : .primary }
            origin = Array(original.nodes.indices)
            representative = origin
        } else {
            graph = Graph()
            try rewrite(original, support: support, primary: primary, fallback: fallback)
        }

        // Consecutive nodes on one backend form a partition; leaves join their readers'.
        var current: Placement = .free
        for id in graph.nodes.indices where placement[id] != .free {
            if placement[id] != current {
                partitions.append((placement[id] == .primary ? primary : fallback, []))
                current = placement[id]
            }
            partitions[partitions.count - 1].nodes.append(id)
        }
        report.partitions = partitions.map { ScheduleReport.Partition(backend: $0.backend.name, nodes: $0.nodes.count) }
    }

    /// Copies `original` into `graph`, each refused node decomposed or placed on the fallback.
    private mutating func rewrite(_ original: Graph, support: [NodeSupport], primary: any Backend, fallback: any Backend) throws {
        for node in original.nodes {
            let mapped = node.inputs.map { Tensor(id: representative[$0], type: original.nodes[$0].type) }
            let firstNew = graph.nodes.count
            switch node.op {
            case .input, .parameter:
                _ = graph.copy(node, from: original, inputs: [])
                placement.append(.free)
            default:
                let support = support[node.id]
                if support.isSupported {
                    _ = graph.copy(node, from: original, inputs: mapped)
                    placement.append(.primary)
                } else if Self.primaryRunsDecomposition(of: node, in: original, primary: primary),
                          let _ = try Decomposition.expand(node, inputs: mapped, into: &graph) {
                    report.decomposed.append(.init(node: node.id, op: node.op.summary, reason: support.reason ?? ""))
                    placement += Array(repeating: .primary, count: graph.nodes.count - firstNew)
                } else {
                    if case let .unsupported(reason) = fallback.supports(node, in: original) {
                        throw BackendError.unsupportedOp(backend: primary.name, op: node.op.summary, node: node.id,
                                                         reason: "\(support.reason ?? ""); the \(fallback.name) fallback cannot run it either: \(reason)")
                    }
                    _ = graph.copy(node, from: original, inputs: mapped)
                    placement.append(.fallback)
                    report.fallbacks.append(.init(node: node.id, op: node.op.summary, reason: support.reason ?? ""))
                }
            }
            origin += Array(repeating: node.id, count: graph.nodes.count - firstNew)
            representative.append(graph.nodes.count - 1)
        }
        for output in original.outputs { graph.markOutput(Tensor(id: representative[output], type: original.nodes[output].type)) }
    }

    /// Whether the primary backend runs every node of `node`'s decomposition, tried on a
    /// scratch graph whose leaves stand for the node's inputs.
    private static func primaryRunsDecomposition(of node: Node, in original: Graph, primary: any Backend) -> Bool {
        guard Decomposition.exists(for: node.op) else { return false }
        var scratch = Graph()
        let leaves = node.inputs.enumerated().map { index, id in scratch.input("operand\(index)", original.nodes[id].type.shape, original.nodes[id].type.dtype) }
        guard (try? Decomposition.expand(node, inputs: leaves, into: &scratch)) != nil else { return false }
        return scratch.nodes.dropFirst(leaves.count).allSatisfy { primary.supports($0, in: scratch).isSupported }
    }

    /// Name of the input that carries node `id`'s value into a later partition.
    private static func carriedName(_ id: Int) -> String { "scheduled:%\(id)" }

    func run(inputs: [String: HostTensor], options: ExecutionOptions, original: Graph) throws -> ExecutionResult {
        // Which partition reads each value (to know what a partition must hand on).
        var partitionOf = [Int](repeating: -1, count: graph.nodes.count)
        for (index, partition) in partitions.enumerated() { for id in partition.nodes { partitionOf[id] = index } }
        var neededLater = [Bool](repeating: false, count: graph.nodes.count)
        for node in graph.nodes where partitionOf[node.id] >= 0 {
            for input in node.inputs where partitionOf[input] >= 0 && partitionOf[input] != partitionOf[node.id] { neededLater[input] = true }
        }
        for output in graph.outputs { neededLater[output] = true }

        var values: [Int: HostTensor] = [:]
        var report = self.report
        var result = ExecutionResult(outputs: [])
        for partition in partitions {
            var part = Graph()
            var local: [Int: Tensor] = [:]
            var partInputs: [String: HostTensor] = [:]
            var returned: [Int] = []
            for id in partition.nodes {
                let node = graph.nodes[id]
                for input in node.inputs where local[input] == nil {
                    let leaf = graph.nodes[input]
                    switch leaf.op {
                    case let .input(name):
                        local[input] = part.copy(leaf, from: graph, inputs: [])
                        partInputs[name] = inputs[name]
                    case .parameter:
                        local[input] = part.copy(leaf, from: graph, inputs: [])
                    default:
                        guard let value = values[input] else { preconditionFailure("value %\(input) crosses partitions unset") }
                        local[input] = part.input(Self.carriedName(input), leaf.type.shape, leaf.type.dtype)
                        partInputs[Self.carriedName(input)] = value
                        report.transferredBytes += value.byteCount
                    }
                }
                local[id] = part.copy(node, from: graph, inputs: node.inputs.map { local[$0]! })
                if neededLater[id] || options.keepIntermediates {
                    part.markOutput(local[id]!)
                    returned.append(id)
                }
            }
            // Progress in the graph's own node count: the nodes before this partition, plus
            // this partition's share of its own (which counts the copied leaves too).
            var partOptions = options
            let before = partition.nodes.first ?? 0, span = partition.nodes.count
            if let progress = options.progress {
                partOptions.progress = { done, total in progress(before + span * done / max(1, total), graph.nodes.count) }
            }
            let partResult = try partition.backend.execute(part, inputs: partInputs, options: partOptions)
            result.transientWeightBytes += partResult.transientWeightBytes
            result.uploadWaitSeconds += partResult.uploadWaitSeconds
            result.streamedSegments += partResult.streamedSegments
            if let peak = partResult.peakDeviceBytes { result.peakDeviceBytes = max(result.peakDeviceBytes ?? 0, peak) }
            for (id, value) in zip(returned, partResult.outputs) { values[id] = value }
            for (id, tensor) in local {
                if let seconds = partResult.nodeSeconds[tensor.id] { result.nodeSeconds[origin[id], default: 0] += seconds }
            }
        }

        func value(_ id: Int) -> HostTensor {
            if let value = values[id] { return value }
            switch graph.nodes[id].op {
            case let .input(name): return inputs[name]!
            default: return graph.weight(id)
            }
        }
        result.outputs = graph.outputs.map(value)
        if options.keepIntermediates {
            for node in original.nodes { result.intermediates[node.id] = value(representative[node.id]) }
        }
        result.schedule = report
        return result
    }
}
