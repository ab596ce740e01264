import Foundation
import LoRAFuse
import LoRAFuseModels
import PostgresNIO
import Synchronization

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

    public var location: String { database.location }
    public var isLocal: Bool { false }
    /// Seconds a running attempt may go without renewing its lease.
    public let lease: Double
    public var leaseSeconds: Double? { lease }
    private let database: PostgresDatabase
    /// The table, schema-qualified and quoted.
    private let table: String
    /// The channel a queued job is announced on (one per schema).
    private let channel: String
    /// The channel every change of a job's state or step is announced on, with its id:
    /// servers whose workers run elsewhere hear progress there (`whenJobChanged`).
    private let changes: String
    private let listeners = Mutex<[Task<Void, Never>]>([])

    /// Connects to `url` (see `PostgresDatabase`) and creates the schema and its job table when missing.
    public init(url: String, leaseSeconds: Double = defaultLeaseSeconds) async throws {
        lease = leaseSeconds
        database = try await PostgresDatabase(url: url, purpose: "the job queue")
        table = database.table("job")
        channel = "lorafuse_jobs_" + database.schema
        changes = "lorafuse_job_changes_" + database.schema
        try await database.create(what: "the job queue", [
            """
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
            """,
            "CREATE INDEX IF NOT EXISTS job_queue ON \(table) (model, state, created_at)",
        ])
    }

    deinit { listeners.withLock { $0.forEach { $0.cancel() } } }

    public func whenJobQueued(_ wake: @escaping @Sendable () -> Void) {
        let listener = database.listen(channel) { _ in wake() }
        listeners.withLock { $0.append(listener) }
    }

    public func whenJobChanged(_ heard: @escaping @Sendable (_ id: String) -> Void) {
        let listener = database.listen(changes, heard: heard)
        listeners.withLock { $0.append(listener) }
    }

    /// Tells every listening worker that a job is waiting.
    private func announce() async throws {
        try await rows("SELECT pg_notify($1, '')", [channel])
    }

    /// Every column but the image (read by `image(_:)` alone), which `record` reads as nil.
    private static let columns = """
        id, model, state, request, step, steps, created_at, started_at, finished_at, error, cancel_requested, attempts, seconds, \
        retrieved, NULL::bytea AS image, worker
        """

    @discardableResult
    private func rows(_ sql: String, _ values: [(any PostgresThrowingDynamicTypeEncodable)?] = []) async throws -> [PostgresRow] {
        try await database.rows(sql, values)
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

    public func submit(request: Data, steps: Int, model: String) async throws -> JobRecord {
        let id = UUID().uuidString.lowercased()
        let rows = try await rows("INSERT INTO \(table) (id, model, state, request, steps) VALUES ($1, $2, 'queued', $3, $4) RETURNING \(Self.columns)",
                                  [id, model, request, steps])
        try await announce()
        return try Self.record(rows[0])
    }

    public func job(_ id: String) async throws -> JobRecord? {
        try await rows("SELECT \(Self.columns) FROM \(table) WHERE id = $1", [id]).first.map(Self.record)
    }

    public func image(_ id: String) async throws -> Data? {
        try await rows("SELECT image FROM \(table) WHERE id = $1", [id]).first.map { try $0.makeRandomAccess()["image"].decode(Data?.self) } ?? nil
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
            RETURNING pg_notify($2, id)
            """, [Self.maxAttempts, changes])
    }

    public func claimNext(model: String, worker: String) async throws -> JobRecord? {
        try await reclaimExpired()
        let rows = try await rows("""
            UPDATE \(table) SET state = 'running', started_at = clock_timestamp(), attempts = attempts + 1, step = 0, worker = $2,
                lease_until = clock_timestamp() + make_interval(secs => $3)
            WHERE id = (SELECT id FROM \(table) WHERE state = 'queued' AND model = $1 ORDER BY created_at, id FOR UPDATE SKIP LOCKED LIMIT 1)
            RETURNING \(Self.columns), pg_notify($4, id)
            """, [model, worker, lease, changes])
        return try rows.first.map(Self.record)
    }

    public func progress(_ job: JobRecord, step: Int) async throws -> Bool {
        let rows = try await rows("""
            UPDATE \(table) SET step = $3, lease_until = clock_timestamp() + make_interval(secs => $4)
            WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING cancel_requested, pg_notify($5, id)
            """, [job.id, job.attempts, step, lease, changes])
        return try rows.first.map { try !$0.makeRandomAccess()["cancel_requested"].decode(Bool.self) } ?? false
    }

    public func heartbeat(_ job: JobRecord) async throws -> Bool {
        let rows = try await rows("""
            UPDATE \(table) SET lease_until = clock_timestamp() + make_interval(secs => $3)
            WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING cancel_requested
            """, [job.id, job.attempts, lease])
        return try rows.first.map { try !$0.makeRandomAccess()["cancel_requested"].decode(Bool.self) } ?? false
    }

    @discardableResult
    public func finish(_ job: JobRecord, as state: JobRecord.State, image: Data?, error: String?, seconds: Double, retrieved: [String]) async throws -> Bool {
        precondition(state.isFinal)
        let names = retrieved.isEmpty ? nil : String(decoding: try JSONEncoder().encode(retrieved), as: UTF8.self)
        let rows = try await rows("""
            UPDATE \(table) SET state = $3, image = $4, error = $5, seconds = $6, retrieved = $7, finished_at = clock_timestamp(), lease_until = NULL
            WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING id, pg_notify($8, id)
            """, [job.id, job.attempts, state.rawValue, image, error, seconds, names, changes])
        return rows.count == 1
    }

    public func release(_ job: JobRecord) async throws {
        try await rows("""
            UPDATE \(table) SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END, step = 0, lease_until = NULL,
                finished_at = CASE WHEN cancel_requested THEN clock_timestamp() END
            WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING pg_notify($3, id)
            """, [job.id, job.attempts, changes])
        try await announce()
    }

    public func cancel(_ id: String) async throws -> JobRecord? {
        let binds: [(any PostgresThrowingDynamicTypeEncodable)?] = [id, changes]
        try await rows("""
            UPDATE \(table) SET state = 'cancelled', finished_at = clock_timestamp() WHERE id = $1 AND state = 'queued' RETURNING pg_notify($2, id)
            """, binds)
        try await rows("UPDATE \(table) SET cancel_requested = true WHERE id = $1 AND state = 'running' RETURNING pg_notify($2, id)", binds)
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

