import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFusePipeline
import LoRAFuseServe

/// `lorafuse serve`: the generation API over HTTP (docs/serving.md).
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve text-to-image generation with fused LoRAs over HTTP (docs/serving.md); the model stays loaded.",
        discussion: """
        The API is Sources/LoRAFuseServe/openapi.yaml: POST /jobs queues a generation (the settings of `lorafuse generate`
        as JSON), GET /jobs/{id} its state, /jobs/{id}/events its progress as server-sent events, /jobs/{id}/image its PNG,
        DELETE /jobs/{id} cancels; GET/POST /loras lists the LoRA folders and the pool and adds to the pool; /health, /metrics
        (Prometheus), GET/PUT /queue (hold the queue). Jobs live in --jobs (SQLite): they survive a restart, and jobs that
        were running start again. One worker per backend device (--devices 0,1 for two).
        """
    )

    @Option(name: .long, help: "A diffusers FLUX pipeline folder: the one base model this server serves.")
    var model: String

    @Option(name: .long, help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(name: .long, parsing: .unconditional, help: "Port to listen on (0: any free port; the one chosen is printed).")
    var port = 8188

    @Option(name: .long, help: "The job queue's SQLite file (created if missing).")
    var jobs = "lorafuse-jobs.sqlite"

    @Option(name: .customLong("lora-dir"), help: "A folder whose .safetensors requests may name as LoRAs (repeat for several).")
    var loraFolders: [String] = []

    @Option(name: .customLong("fusion-weights"), help: "AutoLoRA's merger checkpoint, for requests with fusion autolora.")
    var fusionWeights: String?

    @Option(name: .long, help: "A LoRA pool database (`lorafuse pool`), for auto_loras and GET /loras.")
    var pool: String?

    @Option(name: .customLong("pool-encoder"), help: "The pool's weight encoder, so POST /loras can add LoRAs to the pool.")
    var poolEncoder: String?

    @Option(name: .customLong("token-file"), help: "A file holding a bearer token every request but /health must send.")
    var tokenFile: String?

    @Option(name: .long, parsing: .unconditional, help: "Refuse images with more pixels than this.")
    var maxImagePixels = FluxTextToImage.Limits().maxImagePixels

    @Option(name: .long, parsing: .unconditional, help: "Refuse more sampling steps than this.")
    var maxSteps = 200

    @Option(name: .long, parsing: .unconditional, help: "Refuse request bodies larger than this many bytes.")
    var maxBodyBytes = 64 * 1024

    @Option(name: .long, parsing: .unconditional, help: "Refuse requests with more LoRAs than this.")
    var maxLoras = 8

    @Option(name: .customLong("lora-cache"), help: "Bytes of LoRA weights kept loaded (e.g. 4GiB); least recently used out first.")
    var loraCache = "4GiB"

    @Option(name: .long, help: "Devices of --backend to run jobs on, one worker each (e.g. 0,1; default: --device).")
    var devices: String?

    @Flag(name: .long, help: "Start with the queue held: jobs are accepted and wait until PUT /queue {\"paused\": false}.")
    var paused = false

    @OptionGroup var backendOptions: BackendOptions

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535, got \(port)") }
        guard maxImagePixels >= 1, maxSteps >= 1, maxBodyBytes >= 256, maxLoras >= 0 else {
            throw ValidationError("--max-image-pixels and --max-steps must be at least 1, --max-body-bytes at least 256, --max-loras at least 0")
        }
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

    func run() throws {
        var settings = ServeSettings(model: model)
        settings.host = host
        settings.port = port
        settings.jobsPath = jobs
        settings.loraFolders = loraFolders
        settings.fusionWeights = fusionWeights
        settings.poolPath = pool
        settings.poolEncoder = poolEncoder
        settings.limits.maxImagePixels = maxImagePixels
        settings.limits.maxSteps = maxSteps
        settings.maxBodyBytes = maxBodyBytes
        settings.maxLoRAs = maxLoras
        settings.loraCacheBytes = ByteSize.parse(loraCache)!
        settings.paused = paused
        if let tokenFile {
            let token = try InputFile.read(tokenFile) { ValidationError("--token-file \(tokenFile): \($0)") }
            settings.token = String(decoding: token, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard settings.token!.count >= 16 else { throw ValidationError("--token-file \(tokenFile): the token must be at least 16 characters") }
        }
        var backends: [any Backend] = []
        for index in try deviceIndices() {
            var options = backendOptions
            options.device = index
            backends.append(try options.makeBackend())
        }
        let (host, workers, model) = (host, backends.count, self.model)
        let outcome = BlockingResult()
        Task {
            do {
                try await GenerationServer.run(settings, backends: backends) { port in
                    let line = "lorafuse serve: listening on http://\(host):\(port) (\(model), \(workers) worker\(workers == 1 ? "" : "s"))\n"
                    FileHandle.standardOutput.write(Data(line.utf8))
                }
                outcome.set(nil)
            } catch {
                outcome.set(error)
            }
        }
        if let error = outcome.wait() { throw error }
    }
}

/// The end of async work awaited from synchronous code.
private final class BlockingResult: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var error: (any Error)?

    func set(_ error: (any Error)?) {
        self.error = error
        done.signal()
    }

    func wait() -> (any Error)? {
        done.wait()
        return error
    }
}
