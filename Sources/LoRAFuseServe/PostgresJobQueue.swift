import Foundation
import Logging
import LoRAFuse
import LoRAFuseModels
import PostgresNIO

/// The shared job queue: one PostgreSQL table that `lorafuse serve` and any number of
/// `lorafuse worker` processes, on any machines, use together (docs/serving.md).
///
/// - Claiming is one statement: the oldest queued job of the worker's model, picked with
///   `FOR UPDATE SKIP LOCKED`, so concurrent workers never take the same job and never wait
///   on each other.
/// - A running job holds a *lease* (`lease_until`) that its worker renews with every step
///   and a heartbeat between steps. A worker that dies (SIGKILL, a lost machine) stops
///   renewing; the next claim by any worker puts its job back in the queue, and it runs
///   again (attempt 2). After `maxAttempts` the job fails instead, so a job that kills its
///   workers cannot take the whole pool down.
/// - Every write of an attempt names it (`attempts = n`), so a worker that lost its lease
///   and wakes up later writes nothing: results are written once (at-least-once delivery,
///   exactly-once results). Images are stored in the table (bytea).
public final class PostgresJobQueue: JobQueue {
    public static let defaultLeaseSeconds = 30.0
    public static let maxAttempts = 3

    public let location: String
    public var isLocal: Bool { false }
    /// Seconds a running attempt may go without renewing its lease.
    public let lease: Double
    public var leaseSeconds: Double? { lease }
    private let client: PostgresClient
    private let clientTask: Task<Void, Never>
    /// The table, schema-qualified and quoted.
    private let table: String

    /// Connects to `url` (`postgres://USER:PASSWORD@HOST[:PORT]/DATABASE[?schema=NAME&sslmode=disable|prefer|require]`),
    /// and creates the schema (default `lorafuse`) and its job table when missing.
    public init(url: String, leaseSeconds: Double = defaultLeaseSeconds) async throws {
        let target = try PostgresLocation(url)
        location = target.description
        lease = leaseSeconds
        table = "\"\(target.schema)\".job"
        // The pool retries a failed connection for ever, reporting each failure only to its
        // log: the log is watched, so a server that refuses or rejects us is one error now.
        let failures = ConnectionFailures()
        client = PostgresClient(configuration: target.configuration, backgroundLogger: Logger(label: "lorafuse-postgres") { _ in failures })
        let client = client
        clientTask = Task { await client.run() }
        do {
            let schema = target.schema
            try await Self.firstOf(seconds: 20, failure: { failures.first }) { [self] in try await createTables(schema: schema) }
        } catch {
            clientTask.cancel()
            throw ModelError.notAModel(path: location, reason: "cannot open the job queue: \(error)")
        }
    }

    /// `body`'s result, or an error as soon as `failure` names one or `seconds` pass.
    private static func firstOf(seconds: Double, failure: @escaping @Sendable () -> String?, _ body: @escaping @Sendable () async throws -> Void) async throws {
        let outcome = FirstOutcome()
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            outcome.continuation = continuation
            let work = Task {
                do { try await body(); outcome.resume(nil) } catch { outcome.resume(error) }
            }
            Task {
                let deadline = ContinuousClock.now + .seconds(seconds)
                while ContinuousClock.now < deadline, !outcome.isResumed {
                    if let reason = failure() { outcome.resume(QueueUnreachable(reason: reason)) }
                    try? await Task.sleep(for: .milliseconds(50))
                }
                outcome.resume(QueueUnreachable(reason: "no answer within \(Int(seconds)) s"))
                work.cancel()
            }
        }
    }

    deinit { clientTask.cancel() }

    private func createTables(schema: String) async throws {
        // Several processes may start at once: one creates, under a transaction-scoped lock.
        try await client.withTransaction(logger: Logger(label: "lorafuse-postgres", factory: { _ in SwiftLogNoOpLogHandler() })) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(7461736)", logger: Self.silent)
            try await connection.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \"\(schema)\""), logger: Self.silent)
            try await connection.query(PostgresQuery(unsafeSQL: """
                CREATE TABLE IF NOT EXISTS \(table) (
                    id text PRIMARY KEY,
                    model text NOT NULL,
                    state text NOT NULL,
                    request bytea NOT NULL,
                    step integer NOT NULL DEFAULT 0,
                    steps integer NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                    started_at timestamptz,
                    finished_at timestamptz,
                    error text,
                    cancel_requested boolean NOT NULL DEFAULT false,
                    attempts integer NOT NULL DEFAULT 0,
                    seconds double precision,
                    retrieved text,
                    image bytea,
                    worker text,
                    lease_until timestamptz
                )
                """), logger: Self.silent)
            try await connection.query(PostgresQuery(unsafeSQL: "CREATE INDEX IF NOT EXISTS job_queue ON \(table) (model, state, created_at)"),
                                       logger: Self.silent)
        }
    }

    private static let silent = Logger(label: "lorafuse-postgres", factory: { _ in SwiftLogNoOpLogHandler() })
    private static let columns = "id, model, state, request, step, steps, created_at, started_at, finished_at, error, cancel_requested, attempts, seconds, retrieved, image, worker"

    private func rows(_ sql: String, _ binds: PostgresBindings = PostgresBindings()) async throws -> [PostgresRow] {
        try await client.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: Self.silent).collect()
    }

    private static func record(_ row: PostgresRow) throws -> JobRecord {
        let cells = row.makeRandomAccess()
        guard let state = JobRecord.State(rawValue: try cells["state"].decode(String.self)) else {
            throw ModelError.invalidInputs("job \(try cells["id"].decode(String.self)): unknown state in the queue table")
        }
        return JobRecord(id: try cells["id"].decode(String.self), model: try cells["model"].decode(String.self), state: state,
                         request: try cells["request"].decode(Data.self), step: try cells["step"].decode(Int.self),
                         steps: try cells["steps"].decode(Int.self), createdAt: try cells["created_at"].decode(Date.self),
                         startedAt: try cells["started_at"].decode(Date?.self), finishedAt: try cells["finished_at"].decode(Date?.self),
                         error: try cells["error"].decode(String?.self), cancelRequested: try cells["cancel_requested"].decode(Bool.self),
                         attempts: try cells["attempts"].decode(Int.self), seconds: try cells["seconds"].decode(Double?.self),
                         retrieved: try cells["retrieved"].decode(String?.self), image: try cells["image"].decode(Data?.self),
                         worker: try cells["worker"].decode(String?.self))
    }

    /// Parameters $1, $2, … (nil: SQL NULL, typed by its place in the statement).
    private func bindings(_ values: [(any PostgresThrowingDynamicTypeEncodable)?]) throws -> PostgresBindings {
        var binds = PostgresBindings()
        for value in values {
            if let value { try binds.append(value) } else { binds.appendNull() }
        }
        return binds
    }

    public func submit(request: Data, steps: Int, model: String) async throws -> JobRecord {
        let id = UUID().uuidString.lowercased()
        let rows = try await rows("INSERT INTO \(table) (id, model, state, request, steps) VALUES ($1, $2, 'queued', $3, $4) RETURNING \(Self.columns)",
                                  try bindings([id, model, request, steps]))
        return try Self.record(rows[0])
    }

    public func job(_ id: String) async throws -> JobRecord? {
        try await rows("SELECT \(Self.columns) FROM \(table) WHERE id = $1", try bindings([id])).first.map(Self.record)
    }

    /// Puts the jobs of workers whose lease ran out back in the queue (or fails them after
    /// `maxAttempts`, or cancels them when that was asked).
    private func reclaimExpired() async throws {
        try await rows("""
            UPDATE \(table) SET
                state = CASE WHEN cancel_requested THEN 'cancelled' WHEN attempts >= $1 THEN 'failed' ELSE 'queued' END,
                error = CASE WHEN NOT cancel_requested AND attempts >= $1
                             THEN 'its worker stopped answering ' || attempts || ' times (' || coalesce(worker, '?') || ' last)' END,
                finished_at = CASE WHEN cancel_requested OR attempts >= $1 THEN clock_timestamp() END,
                step = 0
            WHERE state = 'running' AND lease_until < clock_timestamp()
            """, try bindings([Self.maxAttempts]))
    }

    public func claimNext(model: String, worker: String) async throws -> JobRecord? {
        try await reclaimExpired()
        let rows = try await rows("""
            UPDATE \(table) SET state = 'running', started_at = clock_timestamp(), attempts = attempts + 1, step = 0, worker = $2,
                lease_until = clock_timestamp() + make_interval(secs => $3)
            WHERE id = (SELECT id FROM \(table) WHERE state = 'queued' AND model = $1 ORDER BY created_at, id FOR UPDATE SKIP LOCKED LIMIT 1)
            RETURNING \(Self.columns)
            """, try bindings([model, worker, lease]))
        return try rows.first.map(Self.record)
    }

    public func progress(_ job: JobRecord, step: Int) async throws -> Bool {
        let rows = try await rows("""
            UPDATE \(table) SET step = $3, lease_until = clock_timestamp() + make_interval(secs => $4)
            WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING cancel_requested
            """, try bindings([job.id, job.attempts, step, lease]))
        return try rows.first.map { try !$0.makeRandomAccess()["cancel_requested"].decode(Bool.self) } ?? false
    }

    public func heartbeat(_ job: JobRecord) async throws -> Bool {
        let rows = try await rows("""
            UPDATE \(table) SET lease_until = clock_timestamp() + make_interval(secs => $3)
            WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING cancel_requested
            """, try bindings([job.id, job.attempts, lease]))
        return try rows.first.map { try !$0.makeRandomAccess()["cancel_requested"].decode(Bool.self) } ?? false
    }

    @discardableResult
    public func finish(_ job: JobRecord, as state: JobRecord.State, image: Data?, error: String?, seconds: Double, retrieved: [String]) async throws -> Bool {
        precondition(state.isFinal)
        let names = retrieved.isEmpty ? nil : String(decoding: try JSONEncoder().encode(retrieved), as: UTF8.self)
        let rows = try await rows("""
            UPDATE \(table) SET state = $3, image = $4, error = $5, seconds = $6, retrieved = $7, finished_at = clock_timestamp(), lease_until = NULL
            WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING id
            """, try bindings([job.id, job.attempts, state.rawValue, image, error, seconds, names]))
        return rows.count == 1
    }

    public func release(_ job: JobRecord) async throws {
        try await rows("""
            UPDATE \(table) SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END, step = 0, lease_until = NULL,
                finished_at = CASE WHEN cancel_requested THEN clock_timestamp() END
            WHERE id = $1 AND attempts = $2 AND state = 'running'
            """, try bindings([job.id, job.attempts]))
    }

    public func cancel(_ id: String) async throws -> JobRecord? {
        let binds = try bindings([id])
        try await rows("UPDATE \(table) SET state = 'cancelled', finished_at = clock_timestamp() WHERE id = $1 AND state = 'queued'", binds)
        try await rows("UPDATE \(table) SET cancel_requested = true WHERE id = $1 AND state = 'running'", binds)
        return try await job(id)
    }

    public func counts() async throws -> [JobRecord.State: Int] {
        var counts: [JobRecord.State: Int] = [:]
        for row in try await rows("SELECT state, count(*) AS n FROM \(table) GROUP BY state") {
            let cells = row.makeRandomAccess()
            if let state = JobRecord.State(rawValue: try cells["state"].decode(String.self)) { counts[state] = try cells["n"].decode(Int.self) }
        }
        return counts
    }
}

/// A `postgres://` URL taken apart: where to connect, as whom, and the schema of the tables.
struct PostgresLocation: CustomStringConvertible {
    let configuration: PostgresClient.Configuration
    let schema: String
    /// The URL without its password.
    let description: String

    init(_ url: String) throws {
        func bad(_ reason: String) -> ModelError { .notAModel(path: url.replacingOccurrences(of: #":[^:@/]*@"#, with: ":***@", options: .regularExpression), reason: reason) }
        guard let parts = URLComponents(string: url), ["postgres", "postgresql"].contains(parts.scheme ?? ""), let host = parts.host, !host.isEmpty else {
            throw bad("not a PostgreSQL URL: postgres://USER:PASSWORD@HOST[:PORT]/DATABASE[?schema=NAME]")
        }
        guard let user = parts.user, !user.isEmpty else { throw bad("the URL names no user (postgres://USER@HOST/DATABASE)") }
        let database = String(parts.path.drop { $0 == "/" })
        let query = Dictionary((parts.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        schema = query["schema"] ?? "lorafuse"
        guard schema.range(of: #"^[A-Za-z_][A-Za-z0-9_]{0,62}$"#, options: .regularExpression) != nil else {
            throw bad("schema must be a plain identifier (letters, digits, _), got '\(schema)'")
        }
        let tls: PostgresClient.Configuration.TLS
        switch query["sslmode"] ?? "disable" {
        case "disable": tls = .disable
        case "prefer": tls = .prefer(.makeClientConfiguration())
        case "require": tls = .require(.makeClientConfiguration())
        case let other: throw bad("sslmode must be disable, prefer or require, got '\(other)'")
        }
        var configuration = PostgresClient.Configuration(host: host, port: parts.port ?? 5432, username: user,
                                                         password: parts.password, database: database.isEmpty ? nil : database, tls: tls)
        configuration.options.maximumConnections = 8
        self.configuration = configuration
        description = "postgres://\(user)@\(host):\(parts.port ?? 5432)/\(database)?schema=\(schema)"
    }
}

/// Why a queue could not be opened, as the connection pool saw it.
struct QueueUnreachable: Error, CustomStringConvertible {
    let reason: String
    var description: String { reason }
}

/// The first of several outcomes resumes the waiting caller; the rest are dropped.
private final class FirstOutcome: @unchecked Sendable {
    private let lock = NSLock()
    var continuation: CheckedContinuation<Void, any Error>?
    var isResumed: Bool { lock.withLock { continuation == nil } }

    func resume(_ error: (any Error)?) {
        let waiting = lock.withLock { () -> CheckedContinuation<Void, any Error>? in
            defer { continuation = nil }
            return continuation
        }
        if let error { waiting?.resume(throwing: error) } else { waiting?.resume() }
    }
}

/// The connection pool's log, kept only for its first connection failure (`psql_error`).
private final class ConnectionFailures: LogHandler, @unchecked Sendable {
    private let lock = NSLock()
    private var failure: String?
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    var first: String? { lock.withLock { failure } }

    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
        guard let error = metadata?["psql_error"] else { return }
        lock.withLock { if failure == nil { failure = Self.readable("\(error)") } }
    }

    /// PSQLError's reflection is long; its underlying cause or server message is what a person needs.
    private static func readable(_ text: String) -> String {
        for marker in ["underlying: ", "serverInfo: "] {
            if let range = text.range(of: marker) { return String(text[range.upperBound...].prefix(300)) }
        }
        return String(text.prefix(300))
    }
}
