import Foundation
import GRDB
import LoRAFuse
import LoRAFuseModels

/// One generation job as the queue keeps it.
public struct JobRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "job"

    /// Where a job is. `queued` → `running` → `succeeded` | `failed` | `cancelled`; a queued
    /// job may be cancelled at once, a running one stops after its current step.
    public enum State: String, Codable, Sendable, CaseIterable {
        case queued, running, succeeded, failed, cancelled
        public var isFinal: Bool { self == .succeeded || self == .failed || self == .cancelled }
    }

    public var id: String
    /// The base model the job was queued for (the pipeline folder's name): only workers of
    /// that model take it.
    public var model: String
    public var state: State
    /// The request as submitted (JSON), already checked.
    public var request: Data
    public var step: Int
    public var steps: Int
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    public var error: String?
    public var cancelRequested: Bool
    /// Times a worker took the job: more than 1 when a restart re-queued it.
    public var attempts: Int
    public var seconds: Double?
    /// The pool LoRAs `auto_loras` retrieved (JSON array of names).
    public var retrieved: String?
    /// The PNG, once succeeded.
    public var image: Data?
    /// The worker running it (or that ran it last): host, process and device.
    public var worker: String?
}

/// The embedded job queue: one SQLite file (WAL) that survives restarts, for one process
/// (its workers are threads of the server). Every transition is one conditional UPDATE
/// (`… WHERE state = 'running' AND attempts = …`), so a cancel racing a worker's finish has
/// exactly one winner and a result is written once. Opening the queue puts jobs that were
/// running when the last process died back in the queue; finished jobs and their images stay
/// fetchable. Leases are not needed: a worker dies only with the process that opens the file.
public final class JobStore: JobQueue {
    public let path: String
    private let database: DatabasePool
    public var location: String { path }
    public var isLocal: Bool { true }
    public var leaseSeconds: Double? { nil }

    public init(path: String) throws {
        self.path = path
        do {
            try FileManager.default.createDirectory(at: URL(fileURLWithPath: path).deletingLastPathComponent(), withIntermediateDirectories: true)
            var configuration = Configuration()
            configuration.busyMode = .timeout(30)
            // A step's progress is one small commit; in WAL mode NORMAL syncs at checkpoints
            // rather than at every commit. A crash of the process still loses nothing; a power
            // cut may lose the last commits, and a job whose result was among them runs again.
            configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
            database = try DatabasePool(path: path, configuration: configuration)
            var migrator = DatabaseMigrator()
            migrator.registerMigration("v1") { db in
                try db.create(table: JobRecord.databaseTableName) { table in
                    table.primaryKey("id", .text)
                    table.column("state", .text).notNull()
                    table.column("request", .blob).notNull()
                    table.column("step", .integer).notNull()
                    table.column("steps", .integer).notNull()
                    table.column("createdAt", .datetime).notNull()
                    table.column("startedAt", .datetime)
                    table.column("finishedAt", .datetime)
                    table.column("error", .text)
                    table.column("cancelRequested", .boolean).notNull()
                    table.column("attempts", .integer).notNull()
                    table.column("seconds", .double)
                    table.column("retrieved", .text)
                    table.column("image", .blob)
                }
                try db.create(index: "job_queue", on: JobRecord.databaseTableName, columns: ["state", "createdAt"])
            }
            migrator.registerMigration("v2: model and worker") { db in
                try db.alter(table: JobRecord.databaseTableName) { table in
                    table.add(column: "model", .text).notNull().defaults(to: "")
                    table.add(column: "worker", .text)
                }
            }
            try migrator.migrate(database)
            // Whatever was running when the last server stopped starts again.
            try database.write { db in
                try db.execute(sql: "UPDATE job SET state = 'queued', step = 0 WHERE state = 'running' AND cancelRequested = 0")
                try db.execute(sql: "UPDATE job SET state = 'cancelled', finishedAt = ? WHERE state = 'running'", arguments: [Date()])
            }
        } catch {
            throw ModelError.notAModel(path: path, reason: "cannot open the job queue (\(error))")
        }
    }

    public func submit(request: Data, steps: Int, model: String) throws -> JobRecord {
        let job = JobRecord(id: UUID().uuidString.lowercased(), model: model, state: .queued, request: request, step: 0, steps: steps,
                            createdAt: Date(), cancelRequested: false, attempts: 0)
        try database.write { db in try job.insert(db) }
        return job
    }

    public func job(_ id: String) throws -> JobRecord? {
        try database.read { db in
            try JobRecord.fetchOne(db, sql: """
                SELECT id, model, state, request, step, steps, createdAt, startedAt, finishedAt, error, cancelRequested, attempts,
                    seconds, retrieved, worker, NULL AS image FROM job WHERE id = ?
                """, arguments: [id])
        }
    }

    public func image(_ id: String) throws -> Data? {
        try database.read { db in try Data.fetchOne(db, sql: "SELECT image FROM job WHERE id = ?", arguments: [id]) }
    }

    public func claimNext(model: String, worker: String) throws -> JobRecord? {
        try database.write { db in
            guard var job = try JobRecord.filter(Column("state") == JobRecord.State.queued.rawValue && Column("model") == model)
                .order(Column("createdAt"), Column("id")).fetchOne(db) else { return nil }
            job.state = .running
            job.startedAt = Date()
            job.attempts += 1
            job.step = 0
            job.worker = worker
            try job.update(db)
            return job
        }
    }

    public func progress(_ job: JobRecord, step: Int) throws -> Bool {
        try database.write { db in
            try db.execute(sql: "UPDATE job SET step = ? WHERE id = ? AND state = 'running' AND attempts = ?", arguments: [step, job.id, job.attempts])
            return try db.changesCount == 1 && !(Bool.fetchOne(db, sql: "SELECT cancelRequested FROM job WHERE id = ?", arguments: [job.id]) ?? true)
        }
    }

    public func heartbeat(_ job: JobRecord) throws -> Bool {
        try database.read { db in
            try Bool.fetchOne(db, sql: "SELECT state = 'running' AND attempts = ? AND NOT cancelRequested FROM job WHERE id = ?",
                              arguments: [job.attempts, job.id]) ?? false
        }
    }

    @discardableResult
    public func finish(_ job: JobRecord, as state: JobRecord.State, image: Data?, error: String?, seconds: Double, retrieved: [String]) throws -> Bool {
        precondition(state.isFinal)
        let names = retrieved.isEmpty ? nil : String(decoding: try JSONEncoder().encode(retrieved), as: UTF8.self)
        return try database.write { db in
            try db.execute(sql: """
                UPDATE job SET state = ?, image = ?, error = ?, seconds = ?, retrieved = ?, finishedAt = ?
                WHERE id = ? AND state = 'running' AND attempts = ?
                """, arguments: [state.rawValue, image, error, seconds, names, Date(), job.id, job.attempts])
            return db.changesCount == 1
        }
    }

    public func release(_ job: JobRecord) throws {
        try database.write { db in
            try db.execute(sql: "UPDATE job SET state = 'queued', step = 0 WHERE id = ? AND state = 'running' AND attempts = ? AND NOT cancelRequested",
                           arguments: [job.id, job.attempts])
            try db.execute(sql: "UPDATE job SET state = 'cancelled', finishedAt = ? WHERE id = ? AND state = 'running' AND attempts = ?",
                           arguments: [Date(), job.id, job.attempts])
        }
    }

    public func cancel(_ id: String) throws -> JobRecord? {
        try database.write { db in
            try db.execute(sql: "UPDATE job SET state = 'cancelled', finishedAt = ? WHERE id = ? AND state = 'queued'", arguments: [Date(), id])
            try db.execute(sql: "UPDATE job SET cancelRequested = 1 WHERE id = ? AND state = 'running'", arguments: [id])
            return try JobRecord.fetchOne(db, key: id)
        }
    }

    public func whenJobQueued(_ wake: @escaping @Sendable () -> Void) {}
    public func whenJobChanged(_ heard: @escaping @Sendable (_ id: String) -> Void) {}

    public func counts() throws -> [JobRecord.State: Int] {
        try database.read { db in
            var counts: [JobRecord.State: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT state, COUNT(*) AS n FROM job GROUP BY state") {
                if let state = JobRecord.State(rawValue: row["state"]) { counts[state] = row["n"] }
            }
            return counts
        }
    }
}
