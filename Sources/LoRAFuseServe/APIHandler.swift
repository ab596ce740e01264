import Foundation
import LoRAFuse
import LoRAFuseRetrieval
import OpenAPIRuntime

/// The operations of openapi.yaml (the generated `APIProtocol`), over the job store, the
/// image service and the workers.
struct APIHandler: APIProtocol {
    let queue: any JobQueue
    let service: FluxImageService
    let events: JobEvents
    let metrics: ServeMetrics
    let control: QueueControl
    let devices: [String]
    /// Workers of this process (0 when only workers elsewhere run the jobs).
    let workers: Int
    let backendName: String
    /// The pool's weight encoder (POST /loras), when configured.
    let poolEncoder: PoolEncoder?

    func health(_ input: Operations.Health.Input) async throws -> Operations.Health.Output {
        .ok(.init(body: .json(.init(status: "ok", model: service.modelName, backend: backendName, devices: devices,
                                    version: ServeSettings.version))))
    }

    func metrics(_ input: Operations.Metrics.Input) async throws -> Operations.Metrics.Output {
        .ok(.init(body: .plainText(HTTPBody(try await metrics.exposition(queue: queue, service: service)))))
    }

    func getQueue(_ input: Operations.GetQueue.Input) async throws -> Operations.GetQueue.Output {
        .ok(.init(body: .json(try await queueState())))
    }

    func setQueue(_ input: Operations.SetQueue.Input) async throws -> Operations.SetQueue.Output {
        guard case let .json(settings) = input.body else { return .badRequest(.init(body: .json(.init(error: "a JSON body is required")))) }
        control.set(paused: settings.paused)
        return .ok(.init(body: .json(try await queueState())))
    }

    private func queueState() async throws -> Components.Schemas.QueueState {
        let counts = try await queue.counts()
        return .init(paused: control.paused, queued: counts[.queued] ?? 0, running: counts[.running] ?? 0, workers: workers)
    }

    func submitJob(_ input: Operations.SubmitJob.Input) async throws -> Operations.SubmitJob.Output {
        guard case let .json(request) = input.body else { return .badRequest(.init(body: .json(.init(error: "a JSON body is required")))) }
        do {
            try service.check(request)
        } catch {
            return .badRequest(.init(body: .json(.init(error: error.message, field: error.field))))
        }
        let job = try await queue.submit(request: try JSONEncoder().encode(request), steps: service.steps(of: request), model: service.modelName)
        control.wake()
        return .accepted(.init(body: .json(try Self.schema(job))))
    }

    func getJob(_ input: Operations.GetJob.Input) async throws -> Operations.GetJob.Output {
        guard let job = try await queue.job(input.path.id) else { return .notFound(.init(body: .json(Self.noSuchJob(input.path.id)))) }
        return .ok(.init(body: .json(try Self.schema(job))))
    }

    func cancelJob(_ input: Operations.CancelJob.Input) async throws -> Operations.CancelJob.Output {
        guard let job = try await queue.cancel(input.path.id) else { return .notFound(.init(body: .json(Self.noSuchJob(input.path.id)))) }
        if job.state.isFinal && job.state != .cancelled {
            return .conflict(.init(body: .json(.init(error: "job \(job.id) already \(job.state.rawValue)"))))
        }
        if job.state == .cancelled { events.publish(job) }
        return .ok(.init(body: .json(try Self.schema(job))))
    }

    func streamJobEvents(_ input: Operations.StreamJobEvents.Input) async throws -> Operations.StreamJobEvents.Output {
        // Subscribe before reading the job, so no change between the two is missed. Workers of
        // this process publish each change; those elsewhere are followed through the queue.
        let updates = events.subscribe(input.path.id)
        guard let now = try await queue.job(input.path.id) else { return .notFound(.init(body: .json(Self.noSuchJob(input.path.id)))) }
        let stream = AsyncThrowingStream<ServerSentEvent, any Error> { continuation in
            let task = Task {
                do {
                    continuation.yield(try Self.event(now))
                    var last = now
                    if !now.state.isFinal {
                        for await update in updates {
                            // An update older than what was already sent (queued before the read) is dropped.
                            if update.attempts == last.attempts && update.state == last.state && update.step <= last.step
                                && !update.state.isFinal { continue }
                            continuation.yield(try Self.event(update))
                            last = update
                            if update.state.isFinal { break }
                        }
                    }
                    continuation.finish()
                } catch { continuation.finish(throwing: error) }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
        return .ok(.init(body: .textEventStream(HTTPBody(stream.asEncodedServerSentEvents(), length: .unknown, iterationBehavior: .single))))
    }

    func getJobImage(_ input: Operations.GetJobImage.Input) async throws -> Operations.GetJobImage.Output {
        guard let job = try await queue.job(input.path.id) else { return .notFound(.init(body: .json(Self.noSuchJob(input.path.id)))) }
        guard job.state == .succeeded, let image = try await queue.image(job.id) else {
            return .conflict(.init(body: .json(.init(error: "job \(job.id) is \(job.state.rawValue): no image\(job.state.isFinal ? "" : " yet")"))))
        }
        return .ok(.init(body: .png(HTTPBody(image))))
    }

    func listLoRAs(_ input: Operations.ListLoRAs.Input) async throws -> Operations.ListLoRAs.Output {
        let files = LoRAFolders.list(service.settings.loraFolders).map { Components.Schemas.LoRAInfo(name: $0.name, bytes: Int64($0.bytes)) }
        let pool = try await service.pool?.list().map { Self.schema($0, outcome: nil) } ?? []
        return .ok(.init(body: .json(.init(files: files, pool: pool))))
    }

    func addLoRA(_ input: Operations.AddLoRA.Input) async throws -> Operations.AddLoRA.Output {
        guard case let .json(addition) = input.body else { return .badRequest(.init(body: .json(.init(error: "a JSON body is required")))) }
        guard let pool = service.pool, let poolEncoder else {
            return .conflict(.init(body: .json(.init(error: "this server has no LoRA pool with a weight encoder (start it with --pool and --pool-encoder)"))))
        }
        let path: String
        do {
            path = try LoRAFolders.resolve(addition.name, in: service.settings.loraFolders, field: "name")
            if let caption = addition.caption, caption.utf8.count > service.settings.maxPromptBytes {
                throw RequestError("caption", "longer than the server's \(service.settings.maxPromptBytes)-byte limit")
            }
        } catch let error as RequestError {
            return .badRequest(.init(body: .json(.init(error: error.message, field: error.field))))
        }
        do {
            let outcome = try await poolEncoder.add(path: path, caption: addition.caption, to: pool)
            guard let entry = try await pool.list().first(where: { $0.path == path }) else {
                throw RequestError("name", "the pool did not keep \(addition.name)")
            }
            return .ok(.init(body: .json(Self.schema(entry, outcome: outcome.rawValue))))
        } catch {
            return .badRequest(.init(body: .json(.init(error: "\(addition.name): \(error)", field: "name"))))
        }
    }

    func removeLoRA(_ input: Operations.RemoveLoRA.Input) async throws -> Operations.RemoveLoRA.Output {
        guard let pool = service.pool else {
            return .conflict(.init(body: .json(.init(error: "this server has no LoRA pool (start it with --pool)"))))
        }
        let removed = try await pool.removeEntries(input.path.name)
        guard removed > 0 else { return .notFound(.init(body: .json(.init(error: "no pool entry \(input.path.name.prefix(200))")))) }
        return .ok(.init(body: .json(.init(removed: removed))))
    }

    // MARK: Schema conversions

    static func noSuchJob(_ id: String) -> Components.Schemas._Error { .init(error: "no job \(id.prefix(100))") }

    static func schema(_ job: JobRecord) throws -> Components.Schemas.Job {
        let retrieved = try job.retrieved.map { try JSONDecoder().decode([String].self, from: Data($0.utf8)) }
        return .init(id: job.id, state: .init(rawValue: job.state.rawValue)!, step: job.step, steps: job.steps, createdAt: job.createdAt,
                     startedAt: job.startedAt, finishedAt: job.finishedAt, error: job.error, cancelRequested: job.cancelRequested,
                     attempts: job.attempts, seconds: job.seconds, retrieved: retrieved, worker: job.worker,
                     request: try JSONDecoder().decode(GenerationRequest.self, from: job.request))
    }

    static func schema(_ entry: LoRAPool.Entry, outcome: String?) -> Components.Schemas.PoolEntry {
        .init(name: entry.name, path: entry.path, caption: entry.caption, format: entry.format, rank: entry.rank, hash: entry.hash,
              present: entry.isPresent, outcome: outcome)
    }

    /// An event named by what happened (queued, running, progress, or the final state) with the Job as JSON.
    static func event(_ job: JobRecord) throws -> ServerSentEvent {
        let name = job.state == .running && job.step > 0 ? "progress" : job.state.rawValue
        let data = String(decoding: try JSONEncoder.api.encode(schema(job)), as: UTF8.self)
        return ServerSentEvent(event: name, data: data)
    }
}

extension JSONEncoder {
    /// Dates as ISO 8601, as the API's date-time fields.
    static var api: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}
