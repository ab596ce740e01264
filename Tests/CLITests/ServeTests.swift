import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import LoRAFuse
import LoRAFusePipeline
import Testing

/// A `lorafuse` process whose output is collected as it comes (so its pipes never fill).
final class BackgroundProcess: @unchecked Sendable {
    let process = Process()
    private let lock = NSLock()
    private var out = Data(), err = Data()

    init(_ arguments: [String]) throws {
        process.executableURL = CommandLine.executable
        process.arguments = arguments
        let (output, error) = (Pipe(), Pipe())
        process.standardOutput = output
        process.standardError = error
        output.fileHandleForReading.readabilityHandler = { [self] handle in
            let data = handle.availableData
            lock.withLock { out.append(data) }
        }
        error.fileHandleForReading.readabilityHandler = { [self] handle in
            let data = handle.availableData
            lock.withLock { err.append(data) }
        }
        try process.run()
    }

    var output: String { lock.withLock { String(decoding: out, as: UTF8.self) } }
    var errors: String { lock.withLock { String(decoding: err, as: UTF8.self) } }

    /// Waits until standard error holds `text` (or the process ends, or five minutes pass).
    func waitForError(containing text: String) -> Bool { waitUntil { $0.errors.contains(text) } }

    /// Waits until standard output holds `text` (or the process ends, or five minutes pass).
    func waitForOutput(containing text: String) -> Bool { waitUntil { $0.output.contains(text) } }

    private func waitUntil(_ done: (BackgroundProcess) -> Bool) -> Bool {
        let deadline = Date(timeIntervalSinceNow: 300)
        while Date() < deadline, process.isRunning, !done(self) { usleep(20_000) }
        return done(self)
    }

    @discardableResult
    func stop(_ signal: Int32 = SIGTERM) -> Int32 {
        if process.isRunning { kill(process.processIdentifier, signal) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
}

/// A `lorafuse serve` process on a free port, stopped (SIGKILL) when the value goes.
final class ServerProcess {
    let running: BackgroundProcess
    let base: URL
    var process: Process { running.process }

    /// Starts `lorafuse serve ARGUMENTS --port 0` and waits for the line naming its port.
    init(_ arguments: [String]) throws {
        running = try BackgroundProcess(["serve", "--port", "0"] + arguments)
        let ready = running.waitForOutput(containing: "\n")
        let text = running.output
        guard ready, let range = text.range(of: #"http://127\.0\.0\.1:[0-9]+"#, options: .regularExpression),
              let url = URL(string: String(text[range])) else {
            let status = running.stop(SIGKILL)
            throw ServerFailed(message: "serve did not start (status \(status)): \(text) \(running.errors)")
        }
        base = url
    }

    struct ServerFailed: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }

    /// Sends `signal` and waits for the exit; the exit status (or the signal, for SIGKILL).
    @discardableResult
    func stop(_ signal: Int32 = SIGTERM) -> Int32 { running.stop(signal) }
}

/// A minimal HTTP client for the API (URLSession).
struct APIClient {
    let base: URL
    var token: String?

    struct Reply {
        let status: Int
        let data: Data
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:] }
        var text: String { String(decoding: data, as: UTF8.self) }
    }

    func send(_ method: String, _ path: String, json: Any? = nil, body: Data? = nil, token: String? = nil) throws -> Reply {
        var request = URLRequest(url: base.appendingPathComponent(path))
        request.httpMethod = method
        request.timeoutInterval = 300
        if let json { request.httpBody = try JSONSerialization.data(withJSONObject: json) }
        if let body { request.httpBody = body }
        if request.httpBody != nil { request.setValue("application/json", forHTTPHeaderField: "Content-Type") }
        if let bearer = token ?? self.token { request.setValue("Bearer \(bearer)", forHTTPHeaderField: "Authorization") }
        // A blocking call on the test's own thread: an async test waits for the cooperative
        // pool, which the CPU-heavy tests running beside it can hold for seconds, long enough
        // for a job to run past the moment the test meant to act in.
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var outcome: Result<Reply, any Error> = .failure(URLError(.timedOut))
        URLSession.shared.dataTask(with: request) { data, response, error in
            if let error { outcome = .failure(error) } else {
                outcome = .success(Reply(status: (response as? HTTPURLResponse)?.statusCode ?? 0, data: data ?? Data()))
            }
            done.signal()
        }.resume()
        done.wait()
        return try outcome.get()
    }

    /// Polls GET /jobs/ID until `done` holds for it (or ten minutes pass: CI's two cores run
    /// the whole suite at once).
    func waitForJob(_ id: String, until done: ([String: Any]) -> Bool) throws -> [String: Any] {
        let deadline = Date(timeIntervalSinceNow: 600)
        while true {
            let job = try send("GET", "jobs/\(id)").json
            if done(job) || Date() > deadline { return job }
            Thread.sleep(forTimeInterval: 0.02)
        }
    }

    func waitForFinish(_ id: String) throws -> [String: Any] {
        try waitForJob(id) { ["succeeded", "failed", "cancelled"].contains($0["state"] as? String ?? "") }
    }
}

/// Reads a server-sent event stream as it arrives.
final class EventStream: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    private let condition = NSCondition()
    private var received = Data()
    private var ended = false
    private var session: URLSession!

    init(_ url: URL) {
        super.init()
        session = URLSession(configuration: .default, delegate: self, delegateQueue: nil)
        session.dataTask(with: URLRequest(url: url)).resume()
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        condition.withLock {
            received.append(data)
            condition.broadcast()
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        condition.withLock {
            ended = true
            condition.broadcast()
        }
    }

    /// Waits until something arrived (or the stream ended); false after `seconds`.
    func waitForData(seconds: Double = 300) -> Bool {
        condition.withLock {
            let deadline = Date(timeIntervalSinceNow: seconds)
            while received.isEmpty, !ended, condition.wait(until: deadline) {}
            return !received.isEmpty
        }
    }

    /// The events (name, JSON data) once the server ends the stream.
    func events(seconds: Double = 600) -> [(name: String, job: [String: Any])] {
        let text = condition.withLock {
            let deadline = Date(timeIntervalSinceNow: seconds)
            while !ended, condition.wait(until: deadline) {}
            return String(decoding: received, as: UTF8.self)
        }
        session.invalidateAndCancel()
        return text.components(separatedBy: "\n\n").compactMap { block in
            var name = "message", data = ""
            for line in block.split(separator: "\n") {
                if line.hasPrefix("event:") { name = line.dropFirst(6).trimmingCharacters(in: .whitespaces) }
                if line.hasPrefix("data:") { data += line.dropFirst(5).trimmingCharacters(in: .whitespaces) }
            }
            guard !data.isEmpty, let job = (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any] else { return nil }
            return (name, job)
        }
    }
}

/// `lorafuse serve` driven over HTTP as a UI or a script would, on the tiny FLUX pipeline.
@Suite(.serialized) struct ServeTests {
    static let fixtures = CommandLine.repository.appendingPathComponent("Tests/Fixtures/pipeline")
    static let pipeline = fixtures.appendingPathComponent("flux-tiny").path

    /// A scratch folder with loras/tiny.safetensors.
    static func scratchWithLoRA() throws -> ScratchFolder {
        let scratch = ScratchFolder("lorafuse-serve")
        let loras = scratch.url.appendingPathComponent("loras")
        try FileManager.default.createDirectory(at: loras, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("lora-tiny.safetensors"), to: loras.appendingPathComponent("tiny.safetensors"))
        return scratch
    }

    static func serverArguments(_ scratch: ScratchFolder) -> [String] {
        ["--model", pipeline, "--queue", scratch.url.appendingPathComponent("jobs.sqlite").path,
         "--lora-dir", scratch.url.appendingPathComponent("loras").path, "--max-steps", "\(endless)"]
    }

    /// Steps no job finishes before the test stops it: the moment a test acts in (a cancel,
    /// a kill) must not depend on how fast two shared cores run the job.
    static let endless = 100_000
    /// Steps of a job that must finish after being interrupted and run again.
    static let long = 400

    static func request(steps: Int, seed: Int = 3, lora: Bool = true) -> [String: Any] {
        var body: [String: Any] = ["prompt": "a red star", "width": 48, "height": 32, "steps": steps, "max_sequence_length": 16, "seed": seed]
        if lora { body["loras"] = [["name": "tiny", "scale": 0.8]] }
        return body
    }

    /// Submit, hear every step as an event, fetch the PNG: its pixels are `lorafuse generate`'s.
    @Test func servedImageEqualsGenerateWithProgressEvents() throws {
        let scratch = try Self.scratchWithLoRA()
        let server = try ServerProcess(Self.serverArguments(scratch) + ["--paused"])
        let api = APIClient(base: server.base)
        let health = try api.send("GET", "health")
        #expect(health.status == 200 && health.json["model"] as? String == "flux-tiny" && health.json["backend"] as? String == "cpu")

        let submitted = try api.send("POST", "jobs", json: Self.request(steps: 5))
        #expect(submitted.status == 202 && submitted.json["state"] as? String == "queued" && submitted.json["steps"] as? Int == 5, "\(submitted.text)")
        let id = try #require(submitted.json["id"] as? String)
        let lorasListed = try api.send("GET", "loras")
        #expect(((lorasListed.json["files"] as? [[String: Any]]) ?? []).map { $0["name"] as? String } == ["tiny.safetensors"], "\(lorasListed.text)")

        // The queue is held, so the stream is open before the job starts: every step is heard.
        let stream = EventStream(server.base.appendingPathComponent("jobs/\(id)/events"))
        #expect(stream.waitForData())
        let released = try api.send("PUT", "queue", json: ["paused": false])
        #expect(released.status == 200 && released.json["paused"] as? Bool == false)
        let events = stream.events()
        #expect(events.map(\.name) == ["queued", "running"] + Array(repeating: "progress", count: 5) + ["succeeded"], "\(events.map(\.name))")
        #expect(events.filter { $0.name == "progress" }.map { $0.job["step"] as? Int } == [1, 2, 3, 4, 5])

        let job = try api.waitForFinish(id)
        #expect(job["state"] as? String == "succeeded" && job["attempts"] as? Int == 1 && job["step"] as? Int == 5, "\(job)")
        let image = try api.send("GET", "jobs/\(id)/image")
        #expect(image.status == 200)

        let generated = scratch.url.appendingPathComponent("generate.png").path
        let result = try CommandLine.run(["generate", "--model", Self.pipeline, "--prompt", "a red star", "--width", "48", "--height", "32",
                                          "--steps", "5", "--max-sequence-length", "16", "--seed", "3",
                                          "--lora", scratch.url.appendingPathComponent("loras/tiny.safetensors").path + ":0.8", "--output", generated])
        #expect(result.status == 0, "\(result.error)")
        let served = try PNGWriter.decode(image.data), expected = try PNGWriter.decode(Data(contentsOf: URL(fileURLWithPath: generated)))
        #expect(served.width == 48 && served.height == 32)
        #expect(served.pixels == expected.pixels)

        let metrics = try api.send("GET", "metrics")
        #expect(metrics.text.contains(#"lorafuse_jobs_finished_total{outcome="succeeded"} 1"#), "\(metrics.text)")
        #expect(metrics.text.contains("lorafuse_step_seconds_count 5"), "\(metrics.text)")
        #expect(server.stop() == 0)
    }

    /// A queued job is cancelled at once, a running one after its current step; the worker goes on.
    @Test func cancelQueuedAndRunningJobs() throws {
        let scratch = try Self.scratchWithLoRA()
        let server = try ServerProcess(Self.serverArguments(scratch) + ["--paused"])
        let api = APIClient(base: server.base)
        let queued = try #require(try api.send("POST", "jobs", json: Self.request(steps: 2)).json["id"] as? String)
        let cancelled = try api.send("DELETE", "jobs/\(queued)")
        #expect(cancelled.status == 200 && cancelled.json["state"] as? String == "cancelled", "\(cancelled.text)")
        #expect(try api.send("GET", "jobs/\(queued)/image").status == 409)

        let long = try #require(try api.send("POST", "jobs", json: Self.request(steps: Self.endless, lora: false)).json["id"] as? String)
        _ = try api.send("PUT", "queue", json: ["paused": false])
        let started = try api.waitForJob(long) { ($0["step"] as? Int ?? 0) >= 1 }
        #expect(started["state"] as? String == "running", "\(started)")
        let asked = try api.send("DELETE", "jobs/\(long)")
        #expect(asked.status == 200 && (asked.json["cancel_requested"] as? Bool == true || asked.json["state"] as? String == "cancelled"), "\(asked.text)")
        let stopped = try api.waitForFinish(long)
        #expect(stopped["state"] as? String == "cancelled" && (stopped["step"] as? Int ?? Self.endless) < Self.endless, "\(stopped)")

        let next = try #require(try api.send("POST", "jobs", json: Self.request(steps: 1)).json["id"] as? String)
        #expect(try api.waitForFinish(next)["state"] as? String == "succeeded")
        let finished = try api.send("DELETE", "jobs/\(next)")
        #expect(finished.status == 409, "\(finished.text)")
        #expect(try api.send("GET", "jobs/no-such-job").status == 404)
        #expect(server.stop() == 0)
    }

    /// Jobs outlive the server: pending ones run after a restart, one killed mid-run runs
    /// again (attempt 2), and a finished job's image is still served, unchanged.
    @Test func jobsSurviveRestartsAndKills() throws {
        let scratch = try Self.scratchWithLoRA()
        var server = try ServerProcess(Self.serverArguments(scratch))
        var api = APIClient(base: server.base)
        let first = try #require(try api.send("POST", "jobs", json: Self.request(steps: 2)).json["id"] as? String)
        #expect(try api.waitForFinish(first)["state"] as? String == "succeeded")
        let firstImage = try api.send("GET", "jobs/\(first)/image").data
        _ = try api.send("PUT", "queue", json: ["paused": true])
        var pending: [String] = []
        for seed in 0..<2 {
            pending.append(try #require(try api.send("POST", "jobs", json: Self.request(steps: 2, seed: seed)).json["id"] as? String))
        }
        #expect(server.stop(SIGTERM) == 0)

        server = try ServerProcess(Self.serverArguments(scratch))
        api = APIClient(base: server.base)
        for id in pending { #expect(try api.waitForFinish(id)["state"] as? String == "succeeded") }
        #expect(try api.send("GET", "jobs/\(first)/image").data == firstImage)

        let killed = try #require(try api.send("POST", "jobs", json: Self.request(steps: Self.long, lora: false)).json["id"] as? String)
        _ = try api.waitForJob(killed) { ($0["step"] as? Int ?? 0) >= 1 }
        server.stop(SIGKILL)

        server = try ServerProcess(Self.serverArguments(scratch))
        api = APIClient(base: server.base)
        let rerun = try api.waitForFinish(killed)
        #expect(rerun["state"] as? String == "succeeded" && rerun["attempts"] as? Int == 2 && rerun["step"] as? Int == Self.long, "\(rerun)")
        #expect(server.stop() == 0)
    }

    /// A LoRA file replaced under the same name is read again (the cache is keyed by content,
    /// and a file's hash is taken again when the file changes): the next job's image is
    /// `generate`'s with the new file. (Replaced as editors and downloads do, by a new file
    /// renamed over the old: a file rewritten in place changes under its memory map anyway.)
    @Test func aLoRAReplacedUnderItsNameIsReadAgain() throws {
        let scratch = try Self.scratchWithLoRA()
        let file = scratch.url.appendingPathComponent("loras/tiny.safetensors")
        let server = try ServerProcess(Self.serverArguments(scratch))
        let api = APIClient(base: server.base)
        let before = try #require(try api.send("POST", "jobs", json: Self.request(steps: 2)).json["id"] as? String)
        #expect(try api.waitForFinish(before)["state"] as? String == "succeeded")

        // The same size, other weights: every lora_B negated (sign bits of its F32 values).
        var bytes = try Data(contentsOf: file)
        let headerLength = Int(bytes.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let header = try #require(try JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<(8 + headerLength))) as? [String: Any])
        for case let (name, info as [String: Any]) in header where name.contains("lora_B") {
            let range = try #require(info["data_offsets"] as? [Int])
            for offset in stride(from: 8 + headerLength + range[0] + 3, to: 8 + headerLength + range[1], by: 4) { bytes[offset] ^= 0x80 }
        }
        try bytes.write(to: file, options: .atomic)

        let after = try #require(try api.send("POST", "jobs", json: Self.request(steps: 2)).json["id"] as? String)
        #expect(try api.waitForFinish(after)["state"] as? String == "succeeded")
        let served = try [before, after].map { try PNGWriter.decode(api.send("GET", "jobs/\($0)/image").data).pixels }
        let generated = scratch.url.appendingPathComponent("generate.png").path
        let result = try CommandLine.run(["generate", "--model", Self.pipeline, "--prompt", "a red star", "--width", "48", "--height", "32",
                                          "--steps", "2", "--max-sequence-length", "16", "--seed", "3", "--lora", file.path + ":0.8",
                                          "--output", generated])
        #expect(result.status == 0, "\(result.error)")
        let expected = try PNGWriter.decode(Data(contentsOf: URL(fileURLWithPath: generated))).pixels
        let (changed, asGenerated) = (served[0] != served[1], served[1] == expected)  // (booleans: no pixel dumps on failure)
        #expect(changed, "the image did not change with the LoRA")
        #expect(asGenerated, "the image is not generate's with the new LoRA")
        #expect(server.stop() == 0)
    }

    /// Hostile and malformed requests get a 4xx naming the field; the server stays up.
    @Test func hostileRequestsAreRefusedAndTheServerStaysUp() throws {
        let scratch = try Self.scratchWithLoRA()
        let token = "0123456789abcdef-token"
        let tokenFile = scratch.url.appendingPathComponent("token")
        try Data((token + "\n").utf8).write(to: tokenFile)
        // A link inside the LoRA folder to a file outside it is not a way out.
        let outside = scratch.url.appendingPathComponent("outside.safetensors")
        try FileManager.default.copyItem(at: Self.fixtures.appendingPathComponent("lora-tiny.safetensors"), to: outside)
        try FileManager.default.createSymbolicLink(at: scratch.url.appendingPathComponent("loras/link.safetensors"), withDestinationURL: outside)
        let server = try ServerProcess(Self.serverArguments(scratch) + ["--paused", "--token-file", tokenFile.path, "--max-body-bytes", "4096"])
        var api = APIClient(base: server.base)

        #expect(try api.send("GET", "health").status == 200)
        #expect(try api.send("POST", "jobs", json: Self.request(steps: 1)).status == 401)
        #expect(try api.send("GET", "jobs/x", token: "wrong").status == 401)
        api.token = token

        let refused: [(String, [String: Any], String)] = [
            ("huge image", ["prompt": "x", "width": 1 << 20, "height": 1 << 20], "width"),
            ("odd size", ["prompt": "x", "width": 50], "width"),
            ("too many steps", ["prompt": "x", "steps": 10 * Self.endless], "steps"),
            ("path traversal", ["prompt": "x", "loras": [["name": "../../../etc/passwd"]]], "loras[0].name"),
            ("absolute path", ["prompt": "x", "loras": [["name": "/etc/passwd"]]], "loras[0].name"),
            ("a link out of the folder", ["prompt": "x", "loras": [["name": "link"]]], "loras[0].name"),
            ("unknown LoRA", ["prompt": "x", "loras": [["name": "tiny"], ["name": "missing"]]], "loras[1].name"),
            ("infinite-ish scale", ["prompt": "x", "loras": [["name": "tiny", "scale": 1e300]]], "loras[0].scale"),
            ("another base model", ["prompt": "x", "model": "flux1-dev"], "model"),
            ("no prompt", ["width": 48], "prompt"),
            ("prompt of the wrong type", ["prompt": 7], "prompt"),
            ("unknown fusion", ["prompt": "x", "fusion": ["method": "blend"]], "fusion.method"),
            ("fusion without a style", ["prompt": "x", "fusion": ["method": "klora", "content": ["name": "tiny"]]], "fusion.style"),
            ("autolora without a merger", ["prompt": "x", "fusion": ["method": "autolora"], "loras": [["name": "tiny"]]], "fusion.method"),
            ("auto_loras without a pool", ["prompt": "x", "auto_loras": 2], "auto_loras"),
            ("negative seed", ["prompt": "x", "seed": -1], "seed"),
        ]
        for (label, body, field) in refused {
            let reply = try api.send("POST", "jobs", json: body)
            #expect(reply.status == 400 && reply.json["field"] as? String == field && (reply.json["error"] as? String)?.isEmpty == false,
                    "\(label): \(reply.status) \(reply.text)")
        }
        for body in ["{\"prompt\": ", "[1, 2]", "\u{0}\u{1}", ""] {
            let reply = try api.send("POST", "jobs", body: Data(body.utf8))
            #expect(reply.status == 400 && reply.json["error"] != nil, "\(body.debugDescription): \(reply.status) \(reply.text)")
        }
        let large = try api.send("POST", "jobs", json: ["prompt": String(repeating: "a", count: 10_000)])
        #expect(large.status == 413, "\(large.text)")
        #expect(try api.send("PUT", "queue", json: ["paused": "no"]).json["field"] as? String == "paused")
        #expect(try api.send("DELETE", "loras/tiny").status == 409)  // no pool
        #expect(try api.send("GET", "jobs/\(String(repeating: "%2e%2e%2f", count: 50))etc/image").status == 404)

        let health = try api.send("GET", "health")
        #expect(health.status == 200 && server.process.isRunning)
        #expect(try api.send("GET", "queue").json["queued"] as? Int == 0)
        #expect(server.stop() == 0)
    }
}
