import Foundation
import Logging
import LoRAFuse
import LoRAFuseModels
import PostgresNIO

/// A PostgreSQL database the server's shared parts live in (the job queue, the LoRA pool):
/// a connection pool (PostgresNIO's `PostgresClient`) opened from a URL,
/// `postgres://USER:PASSWORD@HOST[:PORT]/DATABASE[?schema=NAME&sslmode=disable|prefer|require]`,
/// whose tables live in one schema (default `lorafuse`).
final class PostgresDatabase: Sendable {
    /// The URL without its password.
    let location: String
    let schema: String
    private let client: PostgresClient
    private let clientTask: Task<Void, Never>
    private static let silent = Logger(label: "lorafuse-postgres", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Connects; `purpose` names what for in the error when the server cannot be reached or
    /// refuses the user (one error, not the pool's endless retries).
    init(url: String, purpose: String) async throws {
        let target = try PostgresLocation(url)
        location = target.description
        schema = target.schema
        // The pool retries a failed connection for ever, reporting each failure only to its
        // log: the log is watched, so a server that refuses or rejects us is one error now.
        let failures = ConnectionFailures()
        client = PostgresClient(configuration: target.configuration, backgroundLogger: Logger(label: "lorafuse-postgres") { _ in failures })
        let client = client
        clientTask = Task { await client.run() }
        do {
            try await Self.firstOf(seconds: 20, failure: { failures.first }) {
                try await client.query("SELECT 1", logger: Self.silent).collect()
            }
        } catch {
            clientTask.cancel()
            throw ModelError.notAModel(path: location, reason: "cannot open \(purpose): \(error)")
        }
    }

    deinit { clientTask.cancel() }

    /// `name` in this database's schema, quoted.
    func table(_ name: String) -> String { "\"\(schema)\".\(name)" }

    /// Runs `statements` (CREATE … IF NOT EXISTS) once the schema exists. Several processes
    /// may start at once: one creates, under a transaction-scoped advisory lock.
    func create(what: String, _ statements: [String]) async throws {
        do {
            try await client.withTransaction(logger: Self.silent) { connection in
                try await connection.query("SELECT pg_advisory_xact_lock(7461736)", logger: Self.silent)
                try await connection.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \"\(schema)\""), logger: Self.silent)
                for statement in statements { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: Self.silent) }
            }
        } catch {
            throw ModelError.notAModel(path: location, reason: "cannot create \(what)'s tables: \(String(reflecting: error))")
        }
    }

    /// The rows of `sql` with parameters $1, $2, … (nil: SQL NULL, typed by its place in the statement).
    @discardableResult
    func rows(_ sql: String, _ values: [(any PostgresThrowingDynamicTypeEncodable)?] = []) async throws -> [PostgresRow] {
        var binds = PostgresBindings()
        for value in values {
            if let value { try binds.append(value) } else { binds.appendNull() }
        }
        return try await client.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: Self.silent).collect()
    }

    /// Calls `heard` with the payload of every notification on `channel` (NOTIFY, `pg_notify`)
    /// until the task is cancelled, on a connection of its own; a lost connection is opened
    /// again a second later.
    func listen(_ channel: String, heard: @escaping @Sendable (_ payload: String) -> Void) -> Task<Void, Never> {
        let client = client
        return Task {
            while !Task.isCancelled {
                do {
                    try await client.withConnection { connection in
                        try await connection.listen(on: channel) { notifications in
                            for try await notification in notifications { heard(notification.payload) }
                        }
                    }
                } catch {}
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// `body`'s result, or an error as soon as `failure` names one or `seconds` pass.
    private static func firstOf(seconds: Double, failure: @escaping @Sendable () -> String?,
                                _ body: @escaping @Sendable () async throws -> [PostgresRow]) async throws {
        let outcome = FirstOutcome()
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            outcome.continuation = continuation
            let work = Task {
                do { _ = try await body(); outcome.resume(nil) } catch { outcome.resume(error) }
            }
            Task {
                let deadline = ContinuousClock.now + .seconds(seconds)
                while ContinuousClock.now < deadline, !outcome.isResumed {
                    if let reason = failure() { outcome.resume(DatabaseUnreachable(reason: reason)) }
                    try? await Task.sleep(for: .milliseconds(50))
                }
                outcome.resume(DatabaseUnreachable(reason: "no answer within \(Int(seconds)) s"))
                work.cancel()
            }
        }
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
        // A job's progress is a commit per step: waiting for each to reach the disk cost
        // 5 ms a step here. Asynchronous commits keep the database consistent; a crash of the
        // database server may lose its last fraction of a second of commits, and a job whose
        // result was among them runs again when its lease runs out (at least once, as ever).
        configuration.options.additionalStartupParameters = [("synchronous_commit", "off")]
        self.configuration = configuration
        description = "postgres://\(user)@\(host):\(parts.port ?? 5432)/\(database)?schema=\(schema)"
    }
}

/// Why a queue could not be opened, as the connection pool saw it.
struct DatabaseUnreachable: Error, CustomStringConvertible {
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
