import Foundation
import LoRAFuse

/// Where jobs wait and results land: the embedded SQLite file (`JobStore`, one process) or a
/// PostgreSQL table shared by any number of servers and workers (`PostgresJobQueue`).
///
/// A worker owns a job for one *attempt* (`JobRecord.attempts` when it claimed it): progress,
/// heartbeats and the result name that attempt, so a worker that lost the job (its lease ran
/// out and another worker took it, or it was cancelled) writes nothing. Delivery is
/// at least once; a result is written once.
public protocol JobQueue: Sendable {
    /// Where the queue lives, for messages (a file, or a database without its password).
    var location: String { get }
    /// Whether every worker of this queue runs in this process (so their events are heard
    /// directly); false when workers elsewhere may run its jobs.
    var isLocal: Bool { get }
    /// Seconds a running attempt may go without a heartbeat before its job is taken back;
    /// nil where workers cannot die apart from the queue (the embedded file).
    var leaseSeconds: Double? { get }

    /// Queues a job for `request` (`steps` for its progress), to be run on `model`.
    func submit(request: Data, steps: Int, model: String) async throws -> JobRecord
    /// The job without its image (`image` is nil: status reads, which clients repeat, do not
    /// carry the PNG); `image(_:)` reads that.
    func job(_ id: String) async throws -> JobRecord?
    /// A succeeded job's PNG.
    func image(_ id: String) async throws -> Data?
    /// The oldest queued job for `model`, now running for `worker`; nil when none is queued.
    /// Jobs whose worker stopped renewing its lease go back to the queue first.
    func claimNext(model: String, worker: String) async throws -> JobRecord?
    /// Records `step` finished and renews the lease; false when the attempt should stop (the
    /// job was cancelled, or is no longer this attempt's).
    func progress(_ job: JobRecord, step: Int) async throws -> Bool
    /// Renews the lease of a running attempt between steps; false as for `progress`.
    func heartbeat(_ job: JobRecord) async throws -> Bool
    /// Ends a running attempt: the image on success, the message on failure, or cancelled.
    /// False when the attempt no longer owned the job (nothing was written).
    @discardableResult
    func finish(_ job: JobRecord, as state: JobRecord.State, image: Data?, error: String?, seconds: Double, retrieved: [String]) async throws -> Bool
    /// Gives a running attempt's job back to the queue (its worker is stopping).
    func release(_ job: JobRecord) async throws
    /// Cancels a queued job at once, or asks a running one to stop after its step. nil: no
    /// such job; the job as it is otherwise (a finished job is returned unchanged).
    func cancel(_ id: String) async throws -> JobRecord?
    /// Jobs per state.
    func counts() async throws -> [JobRecord.State: Int]
    /// Calls `wake` whenever a job is queued by any process (a worker then claims it at once
    /// rather than at its next look, a second later). The embedded queue's server wakes its
    /// workers itself, so it calls nothing.
    func whenJobQueued(_ wake: @escaping @Sendable () -> Void)
    /// Calls `heard` with a job's id whenever a worker of any process changes its state or
    /// step (the embedded queue's workers publish their changes themselves: nothing).
    func whenJobChanged(_ heard: @escaping @Sendable (_ id: String) -> Void)
}

extension JobQueue {
    func finish(_ job: JobRecord, as state: JobRecord.State, image: Data? = nil, error: String? = nil, seconds: Double) async throws {
        try await finish(job, as: state, image: image, error: error, seconds: seconds, retrieved: [])
    }
}

/// Opens the queue a `--queue` value names: `postgres://USER:PASSWORD@HOST:PORT/DATABASE[?schema=NAME]`
/// (also `postgresql://`), or a SQLite file path.
public enum JobQueues {
    /// Whether `location` names a PostgreSQL database (`postgres://` or `postgresql://`) rather
    /// than a SQLite file.
    public static func isPostgres(_ location: String) -> Bool {
        location.hasPrefix("postgres://") || location.hasPrefix("postgresql://")
    }

    public static func open(_ location: String, leaseSeconds: Double = PostgresJobQueue.defaultLeaseSeconds) async throws -> any JobQueue {
        if isPostgres(location) {
            return try await PostgresJobQueue(url: location, leaseSeconds: leaseSeconds)
        }
        return try JobStore(path: location)
    }
}

/// Runs async work to its end from a thread that may block (a worker's own thread, never a
/// task's): the bridge between the synchronous sampling loop and the async queue.
func blockingWait<Value: Sendable>(_ body: @escaping @Sendable () async throws -> Value) throws -> Value {
    try Pending(task: body).value()
}
