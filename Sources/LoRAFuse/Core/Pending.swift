import Dispatch

/// Work started on another thread now and waited for later: the BPE merges read while the
/// vocabulary is, a pool opened while the query is encoded, async work a thread that may block
/// needs the result of. `value()` blocks until it is done and rethrows its error.
public final class Pending<Value: Sendable>: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var result: Result<Value, any Error>?  // written once, before `done` is signalled

    /// Starts `work` on a background thread.
    public init(_ work: @escaping @Sendable () throws -> Value) {
        DispatchQueue.global(qos: .userInitiated).async { [self] in
            result = Result { try work() }
            done.signal()
        }
    }

    /// Starts async `work` as a task: for synchronous code that must wait on it (a command's
    /// `run`, a worker's own thread — never a task, which would hold one of the pool's threads).
    public init(task work: @escaping @Sendable () async throws -> Value) {
        Task { [self] in
            do { result = .success(try await work()) } catch { result = .failure(error) }
            done.signal()
        }
    }

    /// Waits on the semaphore every time (never reads `result` unsynchronized), then passes
    /// the signal on so later calls return at once.
    public func value() throws -> Value {
        done.wait()
        defer { done.signal() }
        return try result!.get()
    }
}
