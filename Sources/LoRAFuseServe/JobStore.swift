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
}

/// The embedded job queue: one SQLite file (WAL) that survives restarts. Every transition
/// is one conditional UPDATE (`… WHERE state = 'running'`), so a cancel racing a worker's
/// finish has exactly one winner and a result is written once. Opening the queue puts jobs
/// that were running when the last process died back in the queue; finished jobs and their
/// images stay fetchable.
public final class JobStore: Sendable {
    public let path: String
    private let database: DatabasePool

    public init(path: String) throws {
        self.path = path
        do {
            try FileManager.default.createDirectory(at: URL(fileURLWithPath: path).deletingLastPathComponent(), withIntermediateDirectories: true)
            var configuration = Configuration()
            configuration.busyMode = .timeout(30)
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

    /// Queues a job for `request` (`steps` for its progress) and returns it.
    public func submit(request: Data, steps: Int) throws -> JobRecord {
        let job = JobRecord(id: UUID().uuidString.lowercased(), state: .queued, request: request, step: 0, steps: steps, createdAt: Date(),
                            cancelRequested: false, attempts: 0)
        try database.write { db in try job.insert(db) }
        return job
    }

    public func job(_ id: String) throws -> JobRecord? {
        try database.read { db in try JobRecord.fetchOne(db, key: id) }
    }

    /// The oldest queued job, now running for the caller; nil when none is queued.
    public func claimNext() throws -> JobRecord? {
        try database.write { db in
            guard var job = try JobRecord.filter(Column("state") == JobRecord.State.queued.rawValue).order(Column("createdAt"), Column("id"))
                .fetchOne(db) else { return nil }
            job.state = .running
            job.startedAt = Date()
            job.attempts += 1
            job.step = 0
            try job.update(db)
            return job
        }
    }

    /// Records `step` finished; false when the job has been asked to stop (or is no longer
    /// running), so the worker stops.
    public func progress(_ id: String, step: Int) throws -> Bool {
        try database.write { db in
            try db.execute(sql: "UPDATE job SET step = ? WHERE id = ? AND state = 'running'", arguments: [step, id])
            let row = try Row.fetchOne(db, sql: "SELECT state, cancelRequested FROM job WHERE id = ?", arguments: [id])
            return row.map { ($0["state"] as String) == "running" && !($0["cancelRequested"] as Bool) } ?? false
        }
    }

    /// Ends a running job: the image on success, the message on failure, or cancelled. Returns
    /// false when the job was not running (it was cancelled or re-queued meanwhile).
    @discardableResult
    public func finish(_ id: String, as state: JobRecord.State, image: Data? = nil, error: String? = nil, seconds: Double,
                       retrieved: [String] = []) throws -> Bool {
        precondition(state.isFinal)
        let names = retrieved.isEmpty ? nil : String(decoding: try JSONEncoder().encode(retrieved), as: UTF8.self)
        return try database.write { db in
            try db.execute(sql: """
                UPDATE job SET state = ?, image = ?, error = ?, seconds = ?, retrieved = ?, finishedAt = ?
                WHERE id = ? AND state = 'running'
                """, arguments: [state.rawValue, image, error, seconds, names, Date(), id])
            return db.changesCount == 1
        }
    }

    /// Cancels a queued job at once, or asks a running one to stop after its step. nil: no
    /// such job; the job as it is otherwise (a finished job is returned unchanged).
    public func cancel(_ id: String) throws -> JobRecord? {
        try database.write { db in
            try db.execute(sql: "UPDATE job SET state = 'cancelled', finishedAt = ? WHERE id = ? AND state = 'queued'", arguments: [Date(), id])
            try db.execute(sql: "UPDATE job SET cancelRequested = 1 WHERE id = ? AND state = 'running'", arguments: [id])
            return try JobRecord.fetchOne(db, key: id)
        }
    }

    /// Jobs per state.
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
