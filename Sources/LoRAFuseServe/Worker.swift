import Foundation
import LoRAFuse

/// Whether workers may start jobs, and the signal that wakes them when one is queued or the
/// queue is released.
final class QueueControl: @unchecked Sendable {
    private let condition = NSCondition()
    private var held: Bool
    private var generation = 0
    private var stopping = false

    init(paused: Bool) { held = paused }

    var paused: Bool { condition.withLock { held } }

    func set(paused: Bool) {
        condition.withLock { held = paused }
        wake()
    }

    /// Wakes the workers (a job was queued, the queue released, or the server stops).
    func wake() {
        condition.withLock {
            generation += 1
            condition.broadcast()
        }
    }

    func stop() {
        condition.withLock { stopping = true }
        wake()
    }

    var isStopping: Bool { condition.withLock { stopping } }

    /// How many wake-ups there have been: what `wait(seconds:after:)` compares against.
    var wakeups: Int { condition.withLock { generation } }

    /// Waits until woken (after `seen` wake-ups: one that came meanwhile ends the wait at
    /// once) or `seconds` pass; false once the server stops.
    func wait(seconds: Double, after seen: Int? = nil) -> Bool {
        condition.withLock {
            let seen = seen ?? generation
            let deadline = Date(timeIntervalSinceNow: seconds)
            while generation == seen, !stopping, condition.wait(until: deadline) {}
            return !stopping
        }
    }
}

/// One worker per backend device: takes the oldest queued job of its model, runs it, writes
/// its result once, publishes each step. A cancel is seen at the next step; when the worker
/// stops (the server or `lorafuse worker` ends) its job goes back to the queue at the next step.
/// Where the queue has leases (PostgreSQL), a heartbeat renews this attempt's between steps.
final class Worker: Sendable {
    /// Host, process and device, as the queue records who ran a job.
    let name: String
    let backend: any Backend
    let queue: any JobQueue
    let service: FluxImageService
    let events: JobEvents
    let metrics: ServeMetrics
    let control: QueueControl
    /// Hears each job's end (`lorafuse worker` prints a line).
    let report: (@Sendable (_ job: JobRecord, _ outcome: JobRecord.State, _ seconds: Double) -> Void)?

    init(index: Int, backend: any Backend, queue: any JobQueue, service: FluxImageService, events: JobEvents, metrics: ServeMetrics,
         control: QueueControl, report: (@Sendable (JobRecord, JobRecord.State, Double) -> Void)? = nil) {
        name = "\(ProcessInfo.processInfo.hostName)/\(getpid())/\(backend.name):\(index)"
        self.backend = backend
        self.queue = queue
        self.service = service
        self.events = events
        self.metrics = metrics
        self.control = control
        self.report = report
    }

    /// Runs jobs on a thread of its own until the control stops; the semaphore is signalled
    /// once the thread has handed back or finished its job.
    func start() -> DispatchSemaphore {
        let finished = DispatchSemaphore(value: 0)
        let thread = Thread { [self] in
            while !control.isStopping {
                // A job queued while the queue was being read wakes the wait that follows.
                let seen = control.wakeups
                if control.paused || !runNext() { _ = control.wait(seconds: 1, after: seen) }
            }
            finished.signal()
        }
        thread.name = "lorafuse-worker"
        thread.stackSize = 16 << 20
        thread.start()
        return finished
    }

    /// Raised from the progress callback when the worker stops: the job goes back to the queue.
    private struct WorkerStopping: Error {}

    /// Runs one job if one is queued; false when none was.
    func runNext() -> Bool {
        let claimed: JobRecord?
        do {
            claimed = try blockingWait { [self] in try await queue.claimNext(model: service.modelName, worker: name) }
        } catch {
            log("cannot read the queue (\(queue.location)): \(error)")
            return false
        }
        guard let job = claimed else { return false }
        events.publish(job)
        let started = DispatchTime.now().uptimeNanoseconds
        let seconds: @Sendable () -> Double = { Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9 }
        let heartbeat = startHeartbeat(job)
        defer { heartbeat?.cancel() }
        var outcome = JobRecord.State.succeeded
        do {
            let request = try JSONDecoder().decode(GenerationRequest.self, from: job.request)
            let (png, retrieved, peak) = try service.generate(request, on: backend) { [self] step, steps, stepSeconds in
                metrics.stepSeconds.record(stepSeconds)
                if control.isStopping { throw WorkerStopping() }
                guard try blockingWait({ [queue] in try await queue.progress(job, step: step) }) else { throw JobCancelled() }
                var now = job
                now.step = step
                now.steps = steps
                events.publish(now)
            }
            if let peak { metrics.peakDeviceBytes.set(Double(peak)) }
            let written = try blockingWait { [queue] in
                try await queue.finish(job, as: .succeeded, image: png, error: nil, seconds: seconds(), retrieved: retrieved)
            }
            if !written { outcome = .cancelled }
        } catch is WorkerStopping {
            _ = try? blockingWait { [queue] in try await queue.release(job) }
            if let now = try? blockingWait({ [queue] in try await queue.job(job.id) }) { events.publish(now) }
            return true
        } catch is JobCancelled {
            outcome = .cancelled
            _ = try? blockingWait { [queue] in try await queue.finish(job, as: .cancelled, seconds: seconds()) }
        } catch {
            outcome = .failed
            log("job \(job.id) failed: \(error)")
            _ = try? blockingWait { [queue] in try await queue.finish(job, as: .failed, error: "\(error)", seconds: seconds()) }
        }
        metrics.jobSeconds.record(seconds())
        metrics.finished(outcome)
        report?(job, outcome, seconds())
        if let final = try? blockingWait({ [queue] in try await queue.job(job.id) }) { events.publish(final) }
        return true
    }

    /// Renews the job's lease every third of it while it runs (a sampling step or a decode
    /// may take longer than the lease on a slow device); nil where the queue has no leases.
    private func startHeartbeat(_ job: JobRecord) -> Task<Void, Never>? {
        guard let lease = queue.leaseSeconds else { return nil }
        return Task { [queue] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(lease / 3))
                if Task.isCancelled { break }
                _ = try? await queue.heartbeat(job)
            }
        }
    }

    private func log(_ message: String) {
        FileHandle.standardError.write(Data("lorafuse: worker \(name): \(message)\n".utf8))
    }
}
