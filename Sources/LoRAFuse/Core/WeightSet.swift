import Foundation
import Synchronization

/// One weight of a `WeightSet`, as graphs refer to it.
public struct WeightHandle: Sendable, Hashable, CustomStringConvertible {
    /// The set it belongs to.
    public let set: WeightSet.ID
    /// Its position in the set.
    public let index: Int
    public var description: String { "weight \(index) of set \(set.raw)" }
}

/// A model's weights as one unit of residency: the tensors (views into memory-mapped files,
/// or small tensors built in memory) that its graphs bind to `.parameter` nodes, each under a
/// unique name. A backend makes a set resident as a whole or in parts
/// (`Backend.makeResident`), the result says how many bytes it holds, and releasing it frees
/// them; graphs hold handles into the set, never host addresses.
///
/// A set grows as graphs are built from its model (a weight is registered the first time a
/// graph binds it), so its byte count is known before anything is uploaded: build the graphs,
/// then make the set resident. Registering the same weight again gives the same handle.
public final class WeightSet: Sendable, Hashable, CustomStringConvertible {
    /// A weight set's identity, unique in the process.
    public struct ID: Sendable, Hashable {
        public let raw: UInt64
    }

    /// A registered weight: its name and the bytes it views (the set keeps them alive, so
    /// the address cannot be reused by another tensor while it is registered).
    private struct Key: Hashable {
        let name: String
        let address: UInt
        let type: TensorType
    }

    private struct Entries {
        var names: [String] = []
        var tensors: [HostTensor] = []
        var indexByKey: [Key: Int] = [:]
        var byteCount = 0
    }

    private static let nextID = Atomic<UInt64>(1)

    public let id: ID
    /// What it holds, for reports (e.g. "transformer", "LoRA style.safetensors").
    public let name: String
    private let entries = Mutex(Entries())

    /// An empty set; `name` appears in reports and errors.
    public init(name: String) {
        self.name = name
        self.id = ID(raw: Self.nextID.add(1, ordering: .relaxed).oldValue)
    }

    /// Registers `tensor` under `name`; the same name for the same bytes (a model's weight
    /// bound by another graph) gives the first handle again.
    public func register(_ name: String, _ tensor: HostTensor) -> WeightHandle {
        let key = Key(name: name, address: UInt(bitPattern: tensor.storage.baseAddress + tensor.byteOffset), type: tensor.type)
        return entries.withLock { entries in
            if let index = entries.indexByKey[key] { return WeightHandle(set: id, index: index) }
            let index = entries.tensors.count
            entries.names.append(name)
            entries.tensors.append(tensor)
            entries.indexByKey[key] = index
            entries.byteCount += tensor.byteCount
            return WeightHandle(set: id, index: index)
        }
    }

    /// The host tensor registered as `handle`.
    public func tensor(_ handle: WeightHandle) -> HostTensor {
        precondition(handle.set == id, "\(handle) is not of weight set '\(name)'")
        return entries.withLock { $0.tensors[handle.index] }
    }

    /// The name `handle` was registered under.
    public func name(of handle: WeightHandle) -> String { entries.withLock { $0.names[handle.index] } }

    /// Every handle, in registration order.
    public var handles: [WeightHandle] {
        entries.withLock { entries in entries.tensors.indices.map { WeightHandle(set: id, index: $0) } }
    }

    /// The handles whose names satisfy `predicate` (e.g. one block's weights).
    public func handles(where predicate: (String) -> Bool) -> [WeightHandle] {
        let names = entries.withLock { $0.names }
        return names.indices.filter { predicate(names[$0]) }.map { WeightHandle(set: id, index: $0) }
    }

    public var count: Int { entries.withLock { $0.tensors.count } }
    /// Bytes of all registered tensors, as stored (a narrow dtype counts narrow).
    public var byteCount: Int { entries.withLock { $0.byteCount } }

    public var description: String { "weight set '\(name)' (\(count) tensors, \(byteCount) bytes)" }

    public static func == (lhs: WeightSet, rhs: WeightSet) -> Bool { lhs === rhs }
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }
}

/// Weights a backend holds for as long as this object lives (or until `release()`): what
/// `Backend.makeResident` returns. Releasing is deterministic: the device memory is freed
/// when the last holder of each weight lets go, not at some later graph execution.
public final class ResidentWeights: @unchecked Sendable {
    /// The backend holding them.
    public let backend: String
    public let sets: [String]
    /// The weights held.
    public let handles: [WeightHandle]
    /// Bytes of those weights, as stored.
    public let byteCount: Int
    /// Bytes the backend allocated to hold them (0 where it reads them in place, as the CPU
    /// backend reads the memory-mapped files).
    public let allocatedBytes: Int
    /// Bytes of the requested weights the backend did not make resident because they do not
    /// fit its device memory budget: executions stream them in (0 when everything fits).
    public let streamedBytes: Int
    private let lock = NSLock()
    private var onRelease: (() -> Void)?

    /// What a backend made resident: the sets, handles and bytes, and `release` to free them.
    public init(backend: String, sets: [String], handles: [WeightHandle], byteCount: Int, allocatedBytes: Int,
                streamedBytes: Int = 0, onRelease: @escaping () -> Void) {
        self.backend = backend
        self.sets = sets
        self.handles = handles
        self.byteCount = byteCount
        self.allocatedBytes = allocatedBytes
        self.streamedBytes = streamedBytes
        self.onRelease = onRelease
    }

    /// Lets the backend free them now (idempotent; also done when this object goes away).
    public func release() {
        let action = lock.withLock { () -> (() -> Void)? in
            defer { onRelease = nil }
            return onRelease
        }
        action?()
    }

    public var isReleased: Bool { lock.withLock { onRelease == nil } }

    deinit { release() }
}

/// What a backend says about its memory.
public struct BackendMemory: Sendable, Hashable {
    /// Bytes the device has for this backend's buffers (the device-local heaps; physical
    /// memory for the CPU), when known.
    public var total: Int?
    /// Bytes still available, where the API tells (VK_EXT_memory_budget, MemAvailable).
    public var free: Int?
    /// Bytes of weights this process holds resident on the backend (including weights read
    /// in place).
    public var residentWeightBytes: Int
    /// Bytes this process allocated on the device for weights.
    public var allocatedWeightBytes: Int
    /// The device memory budget the backend plans with (`--max-device-memory`, or what the
    /// device reports less a margin); nil where there is none (the CPU backend).
    public var budget: Int?

    /// A memory report; `free` is nil where the API does not tell.
    public init(total: Int?, free: Int?, residentWeightBytes: Int, allocatedWeightBytes: Int, budget: Int? = nil) {
        self.total = total
        self.free = free
        self.budget = budget
        self.residentWeightBytes = residentWeightBytes
        self.allocatedWeightBytes = allocatedWeightBytes
    }
}
