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

    /// Waits until woken or `seconds` pass; false once the server stops.
    func wait(seconds: Double) -> Bool {
        condition.withLock {
            let seen = generation
            let deadline = Date(timeIntervalSinceNow: seconds)
            while generation == seen, !stopping, condition.wait(until: deadline) {}
            return !stopping
        }
    }
}

/// One worker per backend device: takes the oldest queued job, runs it, writes its result
/// once, publishes each step. A cancel is seen at the next step.
final class Worker: Sendable {
    let index: Int
    let backend: any Backend
    let store: JobStore
    let service: FluxImageService
    let events: JobEvents
    let metrics: ServeMetrics
    let control: QueueControl

    init(index: Int, backend: any Backend, store: JobStore, service: FluxImageService, events: JobEvents, metrics: ServeMetrics,
         control: QueueControl) {
        self.index = index
        self.backend = backend
        self.store = store
        self.service = service
        self.events = events
        self.metrics = metrics
        self.control = control
    }

    /// Runs jobs on a thread of its own until the control stops.
    func start() -> Thread {
        let thread = Thread { [self] in
            while !control.isStopping {
                if control.paused || !runNext() { _ = control.wait(seconds: 1) }
            }
        }
        thread.name = "lorafuse-worker-\(index)"
        thread.stackSize = 16 << 20
        thread.start()
        return thread
    }

    /// Runs one job if one is queued; false when none was.
    func runNext() -> Bool {
        let claimed: JobRecord?
        do { claimed = try store.claimNext() } catch {
            log("cannot read the queue: \(error)")
            return false
        }
        guard let job = claimed else { return false }
        events.publish(job)
        let started = DispatchTime.now().uptimeNanoseconds
        let seconds = { Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9 }
        var outcome = JobRecord.State.succeeded
        do {
            let request = try JSONDecoder().decode(GenerationRequest.self, from: job.request)
            let (png, retrieved, peak) = try service.generate(request, on: backend) { [self] step, steps, stepSeconds in
                metrics.stepSeconds.record(stepSeconds)
                guard try store.progress(job.id, step: step) else { throw JobCancelled() }
                var now = job
                now.step = step
                now.steps = steps
                events.publish(now)
            }
            if let peak { metrics.peakDeviceBytes.set(Double(peak)) }
            try store.finish(job.id, as: .succeeded, image: png, seconds: seconds(), retrieved: retrieved)
        } catch is JobCancelled {
            outcome = .cancelled
            _ = try? store.finish(job.id, as: .cancelled, seconds: seconds())
        } catch {
            outcome = .failed
            log("job \(job.id) failed: \(error)")
            _ = try? store.finish(job.id, as: .failed, error: "\(error)", seconds: seconds())
        }
        metrics.jobSeconds.record(seconds())
        metrics.finished(outcome)
        if let final = try? store.job(job.id) { events.publish(final) }
        return true
    }

    private func log(_ message: String) {
        FileHandle.standardError.write(Data("lorafuse serve: worker \(index): \(message)\n".utf8))
    }
}
