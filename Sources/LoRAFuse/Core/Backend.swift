/// A device a backend can run on.
public struct DeviceInfo: Sendable, Hashable, Codable {
    public var index: Int
    public var name: String
    /// e.g. "cpu", "discrete-gpu", "integrated-gpu", "virtual-gpu".
    public var kind: String
    /// Free-form facts worth showing (driver, threads, memory, limits).
    public var details: [String: String]

    /// A device as a plugin lists it: its index, name, kind ("cpu", "gpu") and free-form details.
    public init(index: Int, name: String, kind: String, details: [String: String] = [:]) {
        self.index = index
        self.name = name
        self.kind = kind
        self.details = details
    }
}

/// What a backend can execute.
public struct BackendCapabilities: Sendable, Hashable {
    public var ops: Set<OpKind>
    /// Element types its matmul and embedding kernels read directly.
    public var weightTypes: Set<DType>

    /// The op families a backend implements and the weight element types its matmuls read.
    public init(ops: Set<OpKind>, weightTypes: Set<DType>) {
        self.ops = ops
        self.weightTypes = weightTypes
    }
}

/// Whether a backend can run one node of a graph, and if not, why.
public enum NodeSupport: Sendable, Hashable {
    case supported
    case unsupported(reason: String)

    public var isSupported: Bool { self == .supported }
    public var reason: String? {
        if case let .unsupported(reason) = self { return reason }
        return nil
    }
}

/// Whether a plugin can run here, and on what.
public enum BackendAvailability: Sendable {
    case available([DeviceInfo])
    case unavailable(reason: String)

    public var devices: [DeviceInfo] {
        if case let .available(devices) = self { return devices }
        return []
    }
}

/// What an execution records besides its outputs.
public struct ExecutionOptions: Sendable {
    /// Record the wall time of every node.
    public var recordTimings = false
    /// Return every node's value, not only the graph's outputs (for parity reports).
    public var keepIntermediates = false
    /// Called as the work advances with (nodes done, nodes in the graph), from the thread that
    /// called `execute`: after every node on the CPU backend, after every streamed segment on
    /// the Vulkan backend (a graph run in one submission reports only its end).
    public var progress: (@Sendable (Int, Int) -> Void)?

    /// `recordTimings` fills `ExecutionResult.nodeSeconds`; `keepIntermediates` keeps every node's value (for parity and diagnosis).
    public init(recordTimings: Bool = false, keepIntermediates: Bool = false, progress: (@Sendable (Int, Int) -> Void)? = nil) {
        self.recordTimings = recordTimings
        self.keepIntermediates = keepIntermediates
        self.progress = progress
    }
}

/// The outputs of one execution, in `graph.outputs` order, with what the options asked to record.
public struct ExecutionResult: Sendable {
    /// Values of `graph.outputs`, in order, as float32 (or the node's own type for casts).
    public var outputs: [HostTensor]
    /// Every node's value when `keepIntermediates` was set, by node id.
    public var intermediates: [Int: HostTensor] = [:]
    /// Seconds per node id when `recordTimings` was set.
    public var nodeSeconds: [Int: Double] = [:]
    /// Where the nodes ran, when a `BackendScheduler` ran the graph.
    public var schedule: ScheduleReport?
    /// Bytes of weights copied to the device for this execution alone (parameters that were
    /// not resident; streamed ones counted each time they are uploaded); 0 on backends that
    /// read weights in place.
    public var transientWeightBytes = 0
    /// The most device memory this execution held at once: its activations, the weights it
    /// uploaded (both streaming buffers when it streamed) and the resident weights; nil on
    /// backends without device memory (the CPU backend).
    public var peakDeviceBytes: Int?
    /// How many groups of layers the weights were streamed in (0: nothing streamed).
    public var streamedSegments = 0
    /// Seconds the device sat idle waiting for streamed weights to be written (0 when
    /// nothing streamed; the first group's upload, before any compute, counts whole).
    public var uploadWaitSeconds = 0.0

    /// A result with the given outputs (and, optionally, intermediates and per-node seconds).
    public init(outputs: [HostTensor], intermediates: [Int: HostTensor] = [:], nodeSeconds: [Int: Double] = [:]) {
        self.outputs = outputs
        self.intermediates = intermediates
        self.nodeSeconds = nodeSeconds
    }
}

/// A tensor resident on a backend's device.
public protocol BackendBuffer: AnyObject, Sendable {
    var type: TensorType { get }
}

/// An instantiated backend on one device: it allocates and fills buffers and executes graphs.
public protocol Backend: AnyObject, Sendable {
    /// The plugin name, e.g. "cpu".
    var name: String { get }
    var device: DeviceInfo { get }
    var capabilities: BackendCapabilities { get }

    /// Copies a host tensor to the device.
    func upload(_ tensor: HostTensor) throws -> any BackendBuffer
    /// Copies a device buffer back to the host.
    func download(_ buffer: any BackendBuffer) throws -> HostTensor

    /// Whether this backend can run `node` of `graph` (its op, dtypes, shapes and this
    /// device's limits), decided before any work starts. `execute` refuses a graph with an
    /// unsupported node; `BackendScheduler` sends such nodes to another backend instead.
    /// Data-dependent checks (an embedding id past its table) stay in `execute`.
    func supports(_ node: Node, in graph: Graph) -> NodeSupport

    /// Runs `graph` with its `.input` nodes bound to `inputs` by name.
    func execute(_ graph: Graph, inputs: [String: HostTensor], options: ExecutionOptions) throws -> ExecutionResult

    /// Makes weights resident on this backend: for each set, the given handles (a whole
    /// model, or some of its blocks). Returns what holds them; they stay until it is
    /// released or goes away. A graph's parameters that are not resident when it runs are
    /// copied in for that execution alone (`ExecutionResult.transientWeightBytes`). The
    /// CPU backend reads weights in place: nothing is copied and nothing is allocated.
    /// `progress`, where given, is called with (bytes done, bytes asked for) as weights are
    /// copied or imported (a long load: 12 GB to a device takes tens of seconds).
    func makeResident(_ parts: [(set: WeightSet, handles: [WeightHandle])],
                      progress: (@Sendable (Int, Int) -> Void)?) throws -> ResidentWeights

    /// The device's memory as the backend sees it.
    func memory() -> BackendMemory
}

extension Backend {
    /// The given handles of each set, without progress reports.
    public func makeResident(_ parts: [(set: WeightSet, handles: [WeightHandle])]) throws -> ResidentWeights {
        try makeResident(parts, progress: nil)
    }

    /// Every weight of `sets`.
    public func makeResident(_ sets: [WeightSet]) throws -> ResidentWeights {
        try makeResident(sets.map { ($0, $0.handles) })
    }

    /// Every weight of the sets `graphs` bind (their model's, their LoRAs', their constants).
    public func makeResident(weightsOf graphs: [Graph]) throws -> ResidentWeights {
        try makeResident(Graph.weightSets(of: graphs))
    }

    /// Every weight set `graph` binds, made resident at once.
    public func makeResident(weightsOf graph: Graph) throws -> ResidentWeights {
        try makeResident(weightsOf: [graph])
    }

    /// Runs `graph` with default options.
    public func execute(_ graph: Graph, inputs: [String: HostTensor]) throws -> ExecutionResult {
        try execute(graph, inputs: inputs, options: ExecutionOptions())
    }

    /// The default answer: the op family is in `capabilities` and weights are of a type its
    /// kernels read.
    public func supports(_ node: Node, in graph: Graph) -> NodeSupport {
        capabilitySupport(node)
    }

    /// What `capabilities` alone says about `node`; backends with finer limits start here.
    public func capabilitySupport(_ node: Node) -> NodeSupport {
        guard capabilities.ops.contains(node.op.kind) else {
            return .unsupported(reason: "no \(node.op.kind.rawValue) kernel")
        }
        if case .parameter = node.op, !capabilities.weightTypes.contains(node.type.dtype), !node.type.dtype.isInteger {
            return .unsupported(reason: "its kernels cannot read \(node.type.dtype.name) weights")
        }
        return .supported
    }

    /// Checks that every node of `graph` is supported and every input is bound with the
    /// right type; backends call this before doing any work.
    public func validate(_ graph: Graph, inputs: [String: HostTensor]) throws(BackendError) {
        for node in graph.nodes {
            if case let .unsupported(reason) = supports(node, in: graph) {
                throw BackendError.unsupportedOp(backend: name, op: node.op.summary, node: node.id, reason: reason)
            }
            switch node.op {
            case let .input(inputName):
                guard let tensor = inputs[inputName] else { throw BackendError.missingInput(name: inputName, expected: node.type) }
                guard tensor.type == node.type else {
                    throw BackendError.inputTypeMismatch(name: inputName, expected: node.type, actual: tensor.type)
                }
            default:
                break
            }
        }
    }
}

/// Why a backend could not be made or could not run a graph: one line naming the backend, node and sizes.
public enum BackendError: Error, Sendable, CustomStringConvertible, Equatable {
    case unknownBackend(name: String, known: [String])
    case unavailable(name: String, reason: String)
    case noSuchDevice(backend: String, index: Int, count: Int)
    case unsupportedOp(backend: String, op: String, node: Int, reason: String)
    case missingInput(name: String, expected: TensorType)
    case inputTypeMismatch(name: String, expected: TensorType, actual: TensorType)
    case outOfMemory(backend: String, bytes: Int, reason: String)
    case foreignBuffer(backend: String)
    case deviceFailure(backend: String, reason: String)

    public var description: String {
        switch self {
        case let .unknownBackend(name, known): "unknown backend '\(name)' (known: \(known.joined(separator: ", ")))"
        case let .unavailable(name, reason): "backend '\(name)' is unavailable: \(reason)"
        case let .noSuchDevice(backend, index, count): "backend '\(backend)' has no device \(index) (it has \(count))"
        case let .unsupportedOp(backend, op, node, reason): "backend '\(backend)' cannot run node %\(node) \(op): \(reason)"
        case let .missingInput(name, expected): "input '\(name)' (\(expected)) was not given"
        case let .inputTypeMismatch(name, expected, actual): "input '\(name)' is \(actual), expected \(expected)"
        case let .outOfMemory(backend, bytes, reason): "backend '\(backend)' cannot allocate \(bytes) bytes: \(reason)"
        case let .foreignBuffer(backend): "backend '\(backend)' was given a buffer of another backend"
        case let .deviceFailure(backend, reason): "backend '\(backend)': \(reason)"
        }
    }
}
