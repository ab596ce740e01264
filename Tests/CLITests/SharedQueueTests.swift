import Foundation
import LoRAFusePipeline
import Testing

/// The database the shared-queue tests use (Tools/test.sh sets it).
let sharedQueueDatabase = ProcessInfo.processInfo.environment["POSTGRES_TEST_URL"]

/// `lorafuse serve --queue postgres://…` with `lorafuse worker` processes on one PostgreSQL
/// database (Tools/test.sh starts one and sets POSTGRES_TEST_URL). In CI the database
/// must be there: without it these tests fail rather than skip.
@Suite(.serialized, .enabled(if: sharedQueueDatabase != nil || ProcessInfo.processInfo.environment["CI"] != nil,
                             "no PostgreSQL: set POSTGRES_TEST_URL=postgres://… (Tools/test.sh starts one)"))
struct SharedQueueTests {
    static let database = sharedQueueDatabase

    /// The database URL with a schema of this test's own, so runs never see each other's jobs.
    static func freshQueue() throws -> String {
        let database = try #require(Self.database, "POSTGRES_TEST_URL is not set: CI needs a PostgreSQL server (Tools/test.sh starts one)")
        let schema = "test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
        return database + (database.contains("?") ? "&" : "?") + "schema=" + schema
    }

    static func worker(_ queue: String, _ scratch: ScratchFolder) throws -> BackgroundProcess {
        let worker = try BackgroundProcess(["worker", "--model", ServeTests.pipeline, "--queue", queue, "--lease-seconds", "5", "--max-steps", "\(ServeTests.endless)",
                                            "--lora-dir", scratch.url.appendingPathComponent("loras").path])
        #expect(worker.waitForError(containing: "lorafuse worker: "), "\(worker.errors)")
        return worker
    }

    /// The job ids a worker reports having ended with `state`.
    static func reported(_ worker: BackgroundProcess, state: String = "succeeded") -> [String] {
        worker.output.split(separator: "\n").compactMap { line in
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any], object["state"] as? String == state else { return nil }
            return object["job"] as? String
        }
    }

    /// Two workers and an API-only server on one queue: a worker killed mid-job has its job
    /// finished by the other (attempt 2), a running job is cancelled across processes, and
    /// 200 jobs each end exactly once.
    @Test func workersShareOneQueueAndTakeOverAKilledWorkersJob() throws {
        let scratch = try ServeTests.scratchWithLoRA()
        let queue = try Self.freshQueue()
        let server = try ServerProcess(["--model", ServeTests.pipeline, "--queue", queue, "--api-only", "--max-steps", "\(ServeTests.endless)",
                                        "--lora-dir", scratch.url.appendingPathComponent("loras").path])
        let api = APIClient(base: server.base)
        var workers = [try Self.worker(queue, scratch), try Self.worker(queue, scratch)]

        let long = try #require(try api.send("POST", "jobs", json: ServeTests.request(steps: ServeTests.long, lora: false)).json["id"] as? String)
        let events = EventStream(server.base.appendingPathComponent("jobs/\(long)/events"))
        let running = try api.waitForJob(long) { ($0["step"] as? Int ?? 0) >= 1 }
        let owner = try #require(running["worker"] as? String, "\(running)")
        let victim = try #require(workers.firstIndex { owner.contains("/\($0.process.processIdentifier)/") }, "\(owner)")
        workers[victim].stop(SIGKILL)
        let survivor = workers[1 - victim]

        let rerun = try api.waitForFinish(long)
        #expect(rerun["state"] as? String == "succeeded" && rerun["attempts"] as? Int == 2 && rerun["step"] as? Int == ServeTests.long, "\(rerun)")
        #expect((rerun["worker"] as? String)?.contains("/\(survivor.process.processIdentifier)/") == true, "\(rerun)")
        let heard = events.events()
        #expect(heard.last?.name == "succeeded" && heard.contains { $0.name == "progress" }, "\(heard.map(\.name))")
        #expect(Self.reported(survivor) == [long])

        workers[victim] = try Self.worker(queue, scratch)
        let cancelled = try #require(try api.send("POST", "jobs", json: ServeTests.request(steps: ServeTests.endless, lora: false)).json["id"] as? String)
        _ = try api.waitForJob(cancelled) { ($0["step"] as? Int ?? 0) >= 1 }
        #expect(try api.send("DELETE", "jobs/\(cancelled)").status == 200)
        let stopped = try api.waitForFinish(cancelled)
        #expect(stopped["state"] as? String == "cancelled" && (stopped["step"] as? Int ?? ServeTests.endless) < ServeTests.endless, "\(stopped)")

        var ids: [String] = []
        for seed in 0..<200 {
            let body: [String: Any] = ["prompt": "job \(seed)", "width": 16, "height": 16, "steps": 1, "max_sequence_length": 8, "seed": seed]
            let reply = try api.send("POST", "jobs", json: body)
            ids.append(try #require(reply.json["id"] as? String, "\(reply.text)"))
        }
        for id in ids {
            let job = try api.waitForFinish(id)
            #expect(job["state"] as? String == "succeeded" && job["attempts"] as? Int == 1, "\(job)")
        }
        let image = try api.send("GET", "jobs/\(ids[7])/image")
        #expect(image.status == 200 && (try? PNGWriter.decode(image.data).width) == 16)
        #expect(try api.send("GET", "queue").json["queued"] as? Int == 0)

        for worker in workers { #expect(worker.stop(SIGTERM) == 0, "\(worker.errors)") }
        let ended = workers.map { Self.reported($0) }
        let all = ended.flatMap { $0 }.filter { $0 != long }
        #expect(all.count == 200 && Set(all) == Set(ids), "\(all.count) results for 200 jobs")
        #expect(ended.allSatisfy { !$0.isEmpty }, "every worker took jobs: \(ended.map(\.count))")
        #expect(server.stop() == 0)
    }

    /// A worker that stops (SIGTERM) mid-job hands it back; the next worker runs it from the
    /// start (then it is cancelled: the job is endless, so no timing decides what is seen).
    @Test func aStoppedWorkerHandsItsJobBack() throws {
        let scratch = try ServeTests.scratchWithLoRA()
        let queue = try Self.freshQueue()
        let server = try ServerProcess(["--model", ServeTests.pipeline, "--queue", queue, "--api-only", "--max-steps", "\(ServeTests.endless)"])
        let api = APIClient(base: server.base)
        let first = try Self.worker(queue, scratch)
        let job = try #require(try api.send("POST", "jobs", json: ServeTests.request(steps: ServeTests.endless, lora: false)).json["id"] as? String)
        _ = try api.waitForJob(job) { ($0["step"] as? Int ?? 0) >= 1 }
        #expect(first.stop(SIGTERM) == 0, "\(first.errors)")
        let handed = try api.send("GET", "jobs/\(job)").json
        #expect(handed["state"] as? String == "queued" && handed["attempts"] as? Int == 1, "\(handed)")
        let second = try Self.worker(queue, scratch)
        let again = try api.waitForJob(job) { ($0["attempts"] as? Int ?? 0) == 2 && ($0["step"] as? Int ?? 0) >= 1 }
        #expect(again["state"] as? String == "running" && (again["worker"] as? String)?.contains("/\(second.process.processIdentifier)/") == true,
                "\(again)")
        #expect(try api.send("DELETE", "jobs/\(job)").status == 200)
        let done = try api.waitForFinish(job)
        #expect(done["state"] as? String == "cancelled" && done["attempts"] as? Int == 2, "\(done)")
        #expect(second.stop() == 0)
        server.stop()
    }

    /// The LoRA pool as a table beside the queue: a server adds to it (POST /loras), a worker
    /// elsewhere retrieves from it (`auto_loras`) and applies what it found as `loras` would;
    /// DELETE /loras/NAME takes it out.
    @Test func aLoRAPoolSharedThroughPostgres() throws {
        let scratch = try ServeTests.scratchWithLoRA()
        let queue = try Self.freshQueue()
        let loras = scratch.url.appendingPathComponent("loras").path
        let encoder = CommandLine.repository.appendingPathComponent("Tests/Fixtures/retrieval/encoder-flux-tiny.safetensors").path
        let server = try ServerProcess(["--model", ServeTests.pipeline, "--queue", queue, "--pool", queue, "--pool-encoder", encoder,
                                        "--api-only", "--lora-dir", loras])
        let api = APIClient(base: server.base)
        let added = try api.send("POST", "loras", json: ["name": "tiny", "caption": "tiny stripes"])
        #expect(added.status == 200 && added.json["outcome"] as? String == "added" && added.json["name"] as? String == "tiny", "\(added.text)")
        #expect(try api.send("POST", "loras", json: ["name": "tiny"]).json["outcome"] as? String == "unchanged")
        let listed = try api.send("GET", "loras").json["pool"] as? [[String: Any]]
        #expect(listed?.map { $0["caption"] as? String } == ["tiny stripes"], "\(String(describing: listed))")

        let worker = try BackgroundProcess(["worker", "--model", ServeTests.pipeline, "--queue", queue, "--pool", queue, "--lora-dir", loras])
        #expect(worker.waitForError(containing: "lorafuse worker: "), "\(worker.errors)")
        var request = ServeTests.request(steps: 2, lora: false)
        request["auto_loras"] = 1
        let auto = try #require(try api.send("POST", "jobs", json: request).json["id"] as? String)
        let explicit = try #require(try api.send("POST", "jobs", json: ServeTests.request(steps: 2).merging(["loras": [["name": "tiny"]]]) { $1 })
            .json["id"] as? String)
        let found = try api.waitForFinish(auto)
        #expect(found["state"] as? String == "succeeded" && found["retrieved"] as? [String] == ["tiny"], "\(found)")
        #expect(try api.waitForFinish(explicit)["state"] as? String == "succeeded")
        let images = try [api.send("GET", "jobs/\(auto)/image").data, api.send("GET", "jobs/\(explicit)/image").data]
        #expect(try PNGWriter.decode(images[0]).pixels == PNGWriter.decode(images[1]).pixels)
        let removed = try api.send("DELETE", "loras/tiny")
        #expect(removed.status == 200 && removed.json["removed"] as? Int == 1, "\(removed.text)")
        #expect((try api.send("GET", "loras").json["pool"] as? [Any])?.isEmpty == true)
        #expect(try api.send("DELETE", "loras/tiny").status == 404)
        worker.stop()
        server.stop()
    }

    /// A queue that cannot be reached is one clear error and a non-zero exit.
    @Test func anUnreachableQueueIsOneClearError() throws {
        let result = try CommandLine.run(["worker", "--model", ServeTests.pipeline, "--queue", "postgres://nobody:secret@127.0.0.1:1/none"])
        #expect(result.status != 0 && result.error.contains("cannot open the job queue") && !result.error.contains("secret"), "\(result.error)")
        let bad = try CommandLine.run(["worker", "--model", ServeTests.pipeline, "--queue", "postgres://u@h/d?schema=a;drop"])
        #expect(bad.status != 0 && bad.error.contains("schema"), "\(bad.error)")
    }
}
