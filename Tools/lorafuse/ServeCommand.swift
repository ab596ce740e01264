import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFusePipeline
import LoRAFuseServe

/// What `serve` and `worker` share: the model, where LoRAs and jobs come from, the devices.
struct ServiceOptions: ParsableArguments {
    @Option(name: .long, help: "A diffusers FLUX pipeline folder: the one base model served.")
    var model: String

    @Option(name: .long, help: "The job queue: a SQLite file (one process, created if missing) or postgres://USER:PASSWORD@HOST[:PORT]/DATABASE[?schema=NAME] (shared by servers and `lorafuse worker`s).")
    var queue = "lorafuse-jobs.sqlite"

    @Option(name: .long, parsing: .unconditional, help: "Seconds a PostgreSQL queue's running job may go without its worker's heartbeat before another worker takes it.")
    var leaseSeconds = PostgresJobQueue.defaultLeaseSeconds

    @Option(name: .customLong("lora-dir"), help: "A folder whose .safetensors requests may name as LoRAs (repeat for several).")
    var loraFolders: [String] = []

    @Option(name: .customLong("fusion-weights"), help: "AutoLoRA's merger checkpoint, for requests with fusion autolora.")
    var fusionWeights: String?

    @Option(name: .long, help: "The LoRA pool, for auto_loras and GET/POST /loras: a SQLite file (`lorafuse pool`) or postgres://… (a table shared by servers and workers; may be the --queue URL).")
    var pool: String?

    @Option(name: .long, parsing: .unconditional, help: "Refuse images with more pixels than this.")
    var maxImagePixels = FluxTextToImage.Limits().maxImagePixels

    @Option(name: .long, parsing: .unconditional, help: "Refuse more sampling steps than this.")
    var maxSteps = 200

    @Option(name: .customLong("lora-cache"), help: "Bytes of LoRA weights kept loaded (e.g. 4GiB); least recently used out first.")
    var loraCache = "4GiB"

    @Option(name: .long, help: "Devices of --backend to run jobs on, one worker each (e.g. 0,1; default: --device).")
    var devices: String?

    @OptionGroup var backendOptions: BackendOptions

    func validate() throws {
        guard maxImagePixels >= 1, maxSteps >= 1 else { throw ValidationError("--max-image-pixels and --max-steps must be at least 1") }
        guard leaseSeconds.isFinite, leaseSeconds >= 1 else { throw ValidationError("--lease-seconds must be at least 1, got \(leaseSeconds)") }
        guard let bytes = ByteSize.parse(loraCache), bytes >= 0 else {
            throw ValidationError("--lora-cache must be a byte count such as 4GiB or 512MiB, got '\(loraCache)'")
        }
        _ = try deviceIndices()
        for folder in loraFolders {
            var isFolder: ObjCBool = false
            guard FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder), isFolder.boolValue else {
                throw ValidationError("--lora-dir \(folder): no such folder")
            }
        }
    }

    private func deviceIndices() throws -> [Int] {
        guard let devices else { return [backendOptions.device] }
        let indices = devices.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !indices.isEmpty, indices.allSatisfy({ ($0 ?? -1) >= 0 }), Set(indices).count == indices.count else {
            throw ValidationError("--devices must be distinct device indices separated by commas (e.g. 0,1), got '\(devices)'")
        }
        return indices.map { $0! }
    }

    /// The settings these options give (the server's own are set by `serve`).
    func settings() -> ServeSettings {
        var settings = ServeSettings(model: model)
        settings.queue = queue
        settings.leaseSeconds = leaseSeconds
        settings.loraFolders = loraFolders
        settings.fusionWeights = fusionWeights
        settings.poolPath = pool
        settings.limits.maxImagePixels = maxImagePixels
        settings.limits.maxSteps = maxSteps
        settings.loraCacheBytes = ByteSize.parse(loraCache)!
        return settings
    }

    /// One backend per device.
    func backends() throws -> [any Backend] {
        try deviceIndices().map { index in
            var options = backendOptions
            options.device = index
            return try options.makeBackend()
        }
    }
}

/// `lorafuse serve`: the generation API over HTTP (docs/serving.md).
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve text-to-image generation with fused LoRAs over HTTP (docs/serving.md); the model stays loaded.",
        discussion: """
        The API is Sources/LoRAFuseServe/openapi.yaml: POST /jobs queues a generation (the settings of `lorafuse generate`
        as JSON), GET /jobs/{id} its state, /jobs/{id}/events its progress as server-sent events, /jobs/{id}/image its PNG,
        DELETE /jobs/{id} cancels; GET/POST /loras lists the LoRA folders and the pool and adds to the pool, DELETE /loras/{name} removes from it; /health, /metrics
        (Prometheus), GET/PUT /queue (hold the queue). Jobs live in --queue: a SQLite file by default (they survive a
        restart, and jobs that were running start again), or a PostgreSQL database shared with `lorafuse worker` processes
        on other machines. One worker per backend device (--devices 0,1 for two); --api-only runs none here.
        """
    )

    @OptionGroup var service: ServiceOptions

    @Option(name: .long, help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(name: .long, parsing: .unconditional, help: "Port to listen on (0: any free port; the one chosen is printed).")
    var port = 8188

    @Option(name: .customLong("pool-encoder"), help: "The pool's weight encoder, so POST /loras can add LoRAs to the pool.")
    var poolEncoder: String?

    @Option(name: .customLong("token-file"), help: "A file holding a bearer token every request but /health must send.")
    var tokenFile: String?

    @Option(name: .long, parsing: .unconditional, help: "Refuse request bodies larger than this many bytes.")
    var maxBodyBytes = 64 * 1024

    @Option(name: .long, parsing: .unconditional, help: "Refuse requests with more LoRAs than this.")
    var maxLoras = 8

    @Flag(name: .long, help: "Start with the queue held: jobs are accepted and wait until PUT /queue {\"paused\": false}.")
    var paused = false

    @Flag(name: .customLong("api-only"), help: "Run no jobs in this process: `lorafuse worker`s on the same --queue postgres://… run them.")
    var apiOnly = false

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535, got \(port)") }
        guard maxBodyBytes >= 256, maxLoras >= 0 else { throw ValidationError("--max-body-bytes must be at least 256, --max-loras at least 0") }
        if apiOnly, !JobQueues.isPostgres(service.queue) {
            throw ValidationError("--api-only needs a queue other processes can reach: --queue postgres://…")
        }
    }

    func run() throws {
        var settings = service.settings()
        settings.host = host
        settings.port = port
        settings.poolEncoder = poolEncoder
        settings.maxBodyBytes = maxBodyBytes
        settings.maxLoRAs = maxLoras
        settings.paused = paused
        settings.runsWorkers = !apiOnly
        if let tokenFile {
            let token = try InputFile.read(tokenFile) { ValidationError("--token-file \(tokenFile): \($0)") }
            settings.token = String(decoding: token, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard settings.token!.count >= 16 else { throw ValidationError("--token-file \(tokenFile): the token must be at least 16 characters") }
        }
        let backends = try service.backends()
        let (host, workers, model) = (host, apiOnly ? 0 : backends.count, service.model)
        try Pending(task: { [settings] in
            try await GenerationServer.run(settings, backends: backends) { port in
                let line = "lorafuse serve: listening on http://\(host):\(port) (\(model), \(workers) worker\(workers == 1 ? "" : "s"))\n"
                FileHandle.standardOutput.write(Data(line.utf8))
            }
        }).value()
    }
}

/// `lorafuse worker`: runs jobs of a shared PostgreSQL queue (docs/serving.md).
struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run generation jobs from a PostgreSQL queue shared with `lorafuse serve` (docs/serving.md).",
        discussion: """
        Loads --model once and takes the oldest queued job for it, one per device, until SIGINT or SIGTERM (a job then
        running goes back to the queue at its next step). A worker renews its job's lease with each step and a heartbeat;
        if it dies, another worker takes the job over once --lease-seconds pass. --lora-dir folders must hold the LoRAs the
        server's requests name (a shared folder). Prints one JSON line per job it ends.
        """
    )

    @OptionGroup var service: ServiceOptions

    func validate() throws {
        guard JobQueues.isPostgres(service.queue) else {
            throw ValidationError("--queue must be a postgres:// URL: a SQLite queue is run by the `lorafuse serve` that opens it")
        }
    }

    func run() throws {
        let settings = service.settings()
        let backends = try service.backends()
        try Pending(task: {
            try await GenerationWorkers.run(settings, backends: backends, ready: { names, queue in
                FileHandle.standardError.write(Data("lorafuse worker: \(names.joined(separator: ", ")) on \(queue)\n".utf8))
            }) { job, outcome, seconds in
                let line: [String: Any] = ["job": job.id, "state": outcome.rawValue, "worker": job.worker ?? "", "attempt": job.attempts,
                                           "seconds": seconds]
                if let data = try? JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]) {
                    FileHandle.standardOutput.write(data + Data("\n".utf8))
                }
            }
        }).value()
    }
}
