import Foundation
import Hummingbird
import Logging
import LoRAFuse
import LoRAFusePipeline
import LoRAFuseRetrieval
import NIOCore
import OpenAPIHummingbird
import OpenAPIRuntime

/// What `lorafuse serve` runs with (docs/serving.md).
public struct ServeSettings: Sendable {
    public static let version = "1.0.0"

    /// The diffusers FLUX pipeline folder: the one base model this server serves.
    public var model: String
    public var host = "127.0.0.1"
    /// 0: any free port (the one chosen is printed).
    public var port = 8188
    /// The job queue: a SQLite file (embedded, one process) or a `postgres://` URL (shared
    /// with `lorafuse worker` processes; see `JobQueues.open`).
    public var queue = "lorafuse-jobs.sqlite"
    /// Seconds a PostgreSQL queue's running job may go without its worker's heartbeat.
    public var leaseSeconds = PostgresJobQueue.defaultLeaseSeconds
    /// Whether this process runs jobs too (false: it only queues and serves them, and
    /// `lorafuse worker` processes on a shared queue run them).
    public var runsWorkers = true
    /// Folders requests may name LoRAs from.
    public var loraFolders: [String] = []
    /// AutoLoRA's merger checkpoint, for `fusion: autolora`.
    public var fusionWeights: String?
    /// The retrieval pool, for `auto_loras` and GET/POST /loras: a SQLite pool file
    /// (`lorafuse pool`) or a `postgres://` URL (a table shared by every server and worker).
    public var poolPath: String?
    /// The pool's weight encoder, for POST /loras.
    public var poolEncoder: String?
    /// Required as `Authorization: Bearer …` on every path but /health, when set.
    public var token: String?
    public var limits = FluxTextToImage.Limits()
    public var maxBodyBytes = 64 * 1024
    public var maxPromptBytes = 4096
    public var maxLoRAs = 8
    public var maxLoRAScale = 16.0
    public var maxAutoLoRAs = 8
    /// Bytes of LoRA weights kept loaded (least recently used out first).
    public var loraCacheBytes = 4 << 30
    /// Start with the queue held (PUT /queue releases it).
    public var paused = false

    public init(model: String) { self.model = model }
}

/// `lorafuse serve`: loads the model once, opens the job queue, starts one worker per
/// backend, and serves openapi.yaml's API with Hummingbird until SIGINT or SIGTERM.
public enum GenerationServer {
    /// Runs the server; `backends` are the devices jobs run on, one worker each.
    public static func run(_ settings: ServeSettings, backends: [any Backend], ready: @escaping @Sendable (_ port: Int) -> Void) async throws {
        precondition(!backends.isEmpty)
        let service = try await FluxImageService(settings: settings)
        let queue = try await JobQueues.open(settings.queue, leaseSeconds: settings.leaseSeconds)
        let events = JobEvents()
        let metrics = ServeMetrics()
        let control = QueueControl(paused: settings.paused)
        let workers = settings.runsWorkers ? backends.enumerated().map { index, backend in
            Worker(index: index, backend: backend, queue: queue, service: service, events: events, metrics: metrics, control: control)
        } : []
        let encoder = try settings.poolEncoder.map { PoolEncoder(encoder: try LoRAWeightEncoder.load(path: $0), backend: backends[0]) }
        let handler = APIHandler(queue: queue, service: service, events: events, metrics: metrics, control: control,
                                 devices: backends.map(\.device.name), workers: workers.count, backendName: backends[0].name, poolEncoder: encoder)

        let router = Router()
        router.middlewares.add(ServeMiddleware(token: settings.token, maxBodyBytes: settings.maxBodyBytes))
        try handler.registerHandlers(on: router)
        if !workers.isEmpty { queue.whenJobQueued { control.wake() } }
        let following = queue.isLocal ? nil : events.follow(queue)
        defer { following?.cancel() }
        let running = workers.map { $0.start() }
        let app = Application(router: router, configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: "lorafuse"),
                              onServerRunning: { channel in ready(channel.localAddress?.port ?? settings.port) },
                              logger: Self.quietLogger())
        var failure: (any Error)?
        do { try await app.runService() } catch { failure = error }
        control.stop()
        await waitUntilEnded(running, timeout: .now() + 120)
        if let failure { throw failure }
    }

    /// Waits (off the task pool) until each worker's thread has ended, having handed its job
    /// back at its next step, or until `timeout`.
    static func waitUntilEnded(_ workers: [DispatchSemaphore], timeout: DispatchTime) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                for worker in workers { _ = worker.wait(timeout: timeout) }
                continuation.resume()
            }
        }
    }

    private static func quietLogger() -> Logger {
        var logger = Logger(label: "lorafuse-serve")
        logger.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .warning
        return logger
    }
}

/// The pool's weight encoder with the backend it runs on; one addition at a time (an addition
/// that waits on its database lets the next start: two adds of one file both store the same entry).
actor PoolEncoder {
    private let encoder: LoRAWeightEncoder
    private let backend: any Backend

    init(encoder: LoRAWeightEncoder, backend: any Backend) {
        self.encoder = encoder
        self.backend = backend
    }

    func add(path: String, caption: String?, to pool: any RetrievalPool) async throws -> LoRAPool.AddOutcome {
        try await pool.add(path: path, caption: caption, encoder: encoder, backend: backend)
    }
}

/// Before every operation: the bearer token (all paths but /health), the body size limit
/// (413), and errors as JSON `{"error", "field"}` — a body that does not decode names the
/// field at fault (400).
struct ServeMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: String?
    let maxBodyBytes: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let token, request.uri.path != "/health" {
            let given = request.headers[.authorization] ?? ""
            guard Self.equalInConstantTime(given, "Bearer " + token) else {
                return Self.error(.unauthorized, "a bearer token is required (Authorization: Bearer …)", headers: [.wwwAuthenticate: "Bearer"])
            }
        }
        var request = request
        do {
            _ = try await request.collectBody(upTo: maxBodyBytes)
        } catch {
            return Self.error(.contentTooLarge, "the request body is larger than the server's \(maxBodyBytes)-byte limit")
        }
        do {
            return try await next(request, context)
        } catch let error as ServerError {
            if let decoding = Self.decodingError(in: error.underlyingError) {
                return Self.error(.badRequest, Self.describe(decoding), field: Self.field(decoding))
            }
            let status = error.httpStatus.code >= 500 ? HTTPResponse.Status.internalServerError : HTTPResponse.Status(code: error.httpStatus.code)
            return Self.error(status, "\(error.causeDescription): \(error.underlyingError)")
        } catch let error as HTTPError {
            return Self.error(error.status, error.body ?? error.status.reasonPhrase)
        }
    }

    private static func decodingError(in error: any Error) -> DecodingError? {
        if let decoding = error as? DecodingError { return decoding }
        if let server = error as? ServerError { return decodingError(in: server.underlyingError) }
        return nil
    }

    private static func path(_ codingPath: [any CodingKey]) -> String {
        var text = ""
        for key in codingPath {
            if let index = key.intValue { text += "[\(index)]" } else { text += (text.isEmpty ? "" : ".") + key.stringValue }
        }
        return text
    }

    static func field(_ error: DecodingError) -> String? {
        switch error {
        case let .keyNotFound(key, context): path(context.codingPath + [key])
        case let .typeMismatch(_, context), let .valueNotFound(_, context), let .dataCorrupted(context):
            context.codingPath.isEmpty ? nil : path(context.codingPath)
        @unknown default: nil
        }
    }

    static func describe(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound: "required, and missing"
        case let .typeMismatch(type, _): "not a valid \(type)"
        case .valueNotFound: "must not be null"
        case let .dataCorrupted(context):
            context.codingPath.isEmpty ? "the body is not valid JSON (\(context.debugDescription))" : context.debugDescription
        @unknown default: "\(error)"
        }
    }

    static func error(_ status: HTTPResponse.Status, _ message: String, field: String? = nil, headers: HTTPFields = [:]) -> Response {
        var object: [String: String] = ["error": message]
        if let field { object["field"] = field }
        let body = (try? JSONEncoder.api.encode(object)) ?? Data("{\"error\":\"\"}".utf8)
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func equalInConstantTime(_ a: String, _ b: String) -> Bool {
        let (x, y) = (Array(a.utf8), Array(b.utf8))
        var difference = UInt8(x.count == y.count ? 0 : 1)
        for index in 0..<max(x.count, y.count) {
            difference |= (index < x.count ? x[index] : 0) ^ (index < y.count ? y[index] : 0)
        }
        return difference == 0
    }
}

/// `lorafuse worker`: the model loaded once, one worker per backend on a shared queue, until
/// SIGINT or SIGTERM; then each running job goes back to the queue at its next step.
public enum GenerationWorkers {
    /// Runs until a stop signal. `ready` hears the workers' names and the queue; `report`
    /// hears each job a worker ends.
    public static func run(_ settings: ServeSettings, backends: [any Backend],
                           ready: @escaping @Sendable (_ workers: [String], _ queue: String) -> Void,
                           report: @escaping @Sendable (_ job: JobRecord, _ outcome: JobRecord.State, _ seconds: Double) -> Void) async throws {
        precondition(!backends.isEmpty)
        let service = try await FluxImageService(settings: settings)
        let queue = try await JobQueues.open(settings.queue, leaseSeconds: settings.leaseSeconds)
        let control = QueueControl(paused: false)
        let (events, metrics) = (JobEvents(), ServeMetrics())
        let workers = backends.enumerated().map { index, backend in
            Worker(index: index, backend: backend, queue: queue, service: service, events: events, metrics: metrics, control: control, report: report)
        }
        let signals = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { control.stop() }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        ready(workers.map(\.name), queue.location)
        let running = workers.map { $0.start() }
        // A job queued anywhere wakes the workers (LISTEN/NOTIFY); besides, they look every
        // second (QueueControl.wait's timeout), for a notification lost with a connection and
        // for jobs whose worker stopped renewing its lease.
        queue.whenJobQueued { control.wake() }
        // The signal handlers stop the control; the workers end at their next step.
        await GenerationServer.waitUntilEnded(running, timeout: .distantFuture)
    }
}
