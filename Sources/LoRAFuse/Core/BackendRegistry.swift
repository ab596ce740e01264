import Synchronization

/// A backend implementation that can be discovered at run time. A new backend is a new
/// target under `Backends/` exposing one of these; nothing in the models changes.
public protocol BackendPlugin: Sendable {
    /// Name used on the command line (`--backend NAME`).
    var name: String { get }
    /// One line saying what it is.
    var summary: String { get }
    /// Probes the machine (loads libraries, enumerates devices). Must not crash when the
    /// backend's runtime is missing; it reports why instead.
    func availability() -> BackendAvailability
    /// Opens device `deviceIndex` (an index into `availability().devices`).
    func makeBackend(deviceIndex: Int) throws -> any Backend
    /// The same with settings a user gave (`--max-device-memory`); backends that have no
    /// use for a setting ignore it (the default implementation ignores them all).
    func makeBackend(deviceIndex: Int, settings: BackendSettings) throws -> any Backend
}

extension BackendPlugin {
    public func makeBackend(deviceIndex: Int, settings: BackendSettings) throws -> any Backend {
        try makeBackend(deviceIndex: deviceIndex)
    }
}

/// What a user may ask of any backend when opening it (the command line's backend options).
public struct BackendSettings: Sendable, Hashable {
    /// Bytes of device memory the backend may use for weights and activations; nil: what
    /// the device reports as available, less a margin. A device backend streams weights
    /// that do not fit (the Vulkan backend); the CPU backend, which reads weights in place
    /// from the mapped file, has no device memory to budget and ignores it.
    public var maxDeviceMemory: Int?

    public init(maxDeviceMemory: Int? = nil) {
        self.maxDeviceMemory = maxDeviceMemory
    }
}

/// The plugins this process knows, in registration order.
public final class BackendRegistry: Sendable {
    public static let shared = BackendRegistry()

    private let plugins = Mutex<[any BackendPlugin]>([])

    /// An empty registry (`shared` is the one the command line and the tests fill).
    public init() {}

    /// Adds `plugin`, replacing any earlier one with the same name.
    public func register(_ plugin: any BackendPlugin) {
        plugins.withLock { list in
            list.removeAll { $0.name == plugin.name }
            list.append(plugin)
        }
    }

    public var all: [any BackendPlugin] { plugins.withLock { $0 } }
    public var names: [String] { all.map(\.name) }

    /// The plugin registered as `name`, or `BackendError.unknownBackend` listing the names there are.
    public func plugin(named name: String) throws(BackendError) -> any BackendPlugin {
        guard let plugin = all.first(where: { $0.name == name }) else {
            throw BackendError.unknownBackend(name: name, known: names)
        }
        return plugin
    }

    /// Opens backend `name` on device `deviceIndex`, or says why it cannot.
    public func makeBackend(named name: String, deviceIndex: Int = 0, settings: BackendSettings = BackendSettings()) throws -> any Backend {
        let plugin = try plugin(named: name)
        switch plugin.availability() {
        case let .unavailable(reason):
            throw BackendError.unavailable(name: name, reason: reason)
        case let .available(devices):
            guard devices.indices.contains(deviceIndex) else {
                throw BackendError.noSuchDevice(backend: name, index: deviceIndex, count: devices.count)
            }
            return try plugin.makeBackend(deviceIndex: deviceIndex, settings: settings)
        }
    }

    /// The backend that runs every op, where a `BackendScheduler` sends what others cannot.
    public static let fallbackName = "cpu"

    /// Backend `name` behind a `BackendScheduler` that runs what it cannot on the CPU
    /// backend (device 0); the CPU backend itself comes as it is. Commands and pipelines
    /// use this; parity checks use `makeBackend` to see a backend's own answers.
    public func makeScheduledBackend(named name: String, deviceIndex: Int = 0, settings: BackendSettings = BackendSettings()) throws -> any Backend {
        let primary = try makeBackend(named: name, deviceIndex: deviceIndex, settings: settings)
        guard name != Self.fallbackName else { return primary }
        return BackendScheduler(primary: primary, fallback: try makeBackend(named: Self.fallbackName))
    }
}
