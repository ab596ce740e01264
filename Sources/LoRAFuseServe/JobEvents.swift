import Foundation

/// In-process notification of job changes, for the event streams: a worker publishes each
/// step and the final state, subscribers to that job hear them.
final class JobEvents: @unchecked Sendable {
    private let lock = NSLock()
    private var subscribers: [String: [UUID: AsyncStream<JobRecord>.Continuation]] = [:]

    /// A stream of `id`'s changes from now on; it ends when the job ends or the caller stops listening.
    func subscribe(_ id: String) -> AsyncStream<JobRecord> {
        let (stream, continuation) = AsyncStream.makeStream(of: JobRecord.self, bufferingPolicy: .bufferingNewest(256))
        let token = UUID()
        lock.withLock { subscribers[id, default: [:]][token] = continuation }
        continuation.onTermination = { [weak self] _ in
            self?.lock.withLock { () -> Void in
                self?.subscribers[id]?[token] = nil
                if self?.subscribers[id]?.isEmpty == true { self?.subscribers[id] = nil }
            }
        }
        return stream
    }

    func publish(_ job: JobRecord) {
        let listeners = lock.withLock { Array(subscribers[job.id]?.values ?? [:].values) }
        for listener in listeners {
            listener.yield(job)
            if job.state.isFinal { listener.finish() }
        }
    }
}
