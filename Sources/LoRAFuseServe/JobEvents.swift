import Foundation

/// In-process notification of job changes, for the event streams: a worker of this process
/// publishes each step and the final state (`follow` brings those of workers elsewhere),
/// subscribers to that job hear them.
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

    /// The jobs someone listens to now.
    var watched: [String] { lock.withLock { Array(subscribers.keys) } }

    func isWatched(_ id: String) -> Bool { lock.withLock { subscribers[id] != nil } }

    /// Publishes the changes of jobs whose workers run in other processes: each change the
    /// queue announces (read again, only for jobs someone listens to), and
    /// every second each listened-to job again, in case an announcement was lost with a
    /// connection. Duplicates are dropped by the streams. Runs until cancelled.
    func follow(_ queue: any JobQueue) -> Task<Void, Never> {
        queue.whenJobChanged { [self] id in
            guard isWatched(id) else { return }
            Task { if let job = try? await queue.job(id) { publish(job) } }
        }
        return Task { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                for id in watched {
                    if let job = try? await queue.job(id) { publish(job) }
                }
            }
        }
    }

    func publish(_ job: JobRecord) {
        let listeners = lock.withLock { Array(subscribers[job.id]?.values ?? [:].values) }
        for listener in listeners {
            listener.yield(job)
            if job.state.isFinal { listener.finish() }
        }
    }
}
