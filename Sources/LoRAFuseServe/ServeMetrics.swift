import Foundation
import LoRAFuse
import Prometheus

/// The server's Prometheus metrics (GET /metrics): queue length, jobs by outcome, job and
/// step seconds, LoRA cache and memory. Queue gauges are read from the store when scraped.
final class ServeMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    let queued: Gauge
    let running: Gauge
    let jobSeconds: ValueHistogram
    let stepSeconds: ValueHistogram
    let residentBytes: Gauge
    let peakDeviceBytes: Gauge
    let loraCacheBytes: Gauge
    let loraCacheFiles: Gauge

    init() {
        queued = registry.makeGauge(name: "lorafuse_jobs_queued", help: "Jobs waiting for a worker.")
        running = registry.makeGauge(name: "lorafuse_jobs_running", help: "Jobs a worker is running.")
        jobSeconds = registry.makeValueHistogram(name: "lorafuse_job_seconds", buckets: [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800],
                                                 help: "Seconds from a worker taking a job to its result.")
        stepSeconds = registry.makeValueHistogram(name: "lorafuse_step_seconds", buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
                                                  help: "Seconds per sampling step.")
        residentBytes = registry.makeGauge(name: "lorafuse_resident_memory_bytes", help: "Peak resident memory of the server process.")
        peakDeviceBytes = registry.makeGauge(name: "lorafuse_device_memory_peak_bytes", help: "Most device memory one forward pass used (GPU backends).")
        loraCacheBytes = registry.makeGauge(name: "lorafuse_lora_cache_bytes", help: "Bytes of LoRA weights held in the cache.")
        loraCacheFiles = registry.makeGauge(name: "lorafuse_lora_cache_files", help: "LoRA files held in the cache.")
    }

    /// Counts one finished job by its outcome.
    func finished(_ outcome: JobRecord.State) {
        registry.makeCounter(name: "lorafuse_jobs_finished_total", labels: [("outcome", outcome.rawValue)],
                             help: "Jobs finished, by outcome.").increment()
    }

    /// The text exposition, with the gauges read now.
    func exposition(queue: any JobQueue, service: FluxImageService) async throws -> String {
        let counts = try await queue.counts()
        queued.set(Double(counts[.queued] ?? 0))
        running.set(Double(counts[.running] ?? 0))
        residentBytes.set(Double(PeakMemory.residentBytes()))
        loraCacheBytes.set(Double(service.loras.residentBytes))
        loraCacheFiles.set(Double(service.loras.count))
        // Every outcome appears from the start, at 0.
        for outcome in JobRecord.State.allCases where outcome.isFinal {
            registry.makeCounter(name: "lorafuse_jobs_finished_total", labels: [("outcome", outcome.rawValue)], help: "Jobs finished, by outcome.").increment(by: Int64(0))
        }
        return registry.emitToString()
    }
}
