import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld
import LoRAFuseBackends
import Synchronization
import Testing

/// The `lorafuse` executable, run as a user runs it.
struct CommandLine {
    struct Result {
        var status: Int32
        var output: String
        var error: String
    }

    static let executable: URL = {
        // The test bundle sits beside the products in .build/<configuration>/.
        var folder = URL(fileURLWithPath: Swift.CommandLine.arguments[0]).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: folder.appendingPathComponent("lorafuse").path), folder.path != "/" {
            folder = folder.deletingLastPathComponent()
        }
        return folder.appendingPathComponent("lorafuse")
    }()

    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func run(_ arguments: [String], environment extra: [String: String] = [:]) throws -> Result {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(extra) { $1 }
        let output = Pipe(), error = Pipe()
        process.standardOutput = output
        process.standardError = error
        try process.run()
        let outData = output.fileHandleForReading.readDataToEndOfFile()
        let errData = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, output: String(decoding: outData, as: UTF8.self),
                      error: String(decoding: errData, as: UTF8.self))
    }
}

/// A fresh folder under the temporary directory, removed when the value goes.
final class ScratchFolder {
    let url: URL

    init(_ prefix: String) {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }
}

@Suite struct CommandLineTests {
    @Test func backendsListsCPUAndExplainsAMissingVulkanLoader() throws {
        let result = try CommandLine.run(["backends"], environment: ["LORAFUSE_VULKAN_LOADER": "/nonexistent/libvulkan.so.1"])
        #expect(result.status == 0)
        #expect(result.output.contains("cpu: available"))
        #expect(result.output.contains("vulkan: unavailable — cannot load the Vulkan loader"), "\(result.output)")
    }

    @Test func backendsExplainsALoaderWithoutADriver() throws {
        let result = try CommandLine.run(["backends", "--json"],
                                         environment: ["VK_ICD_FILENAMES": "/nonexistent.json", "VK_DRIVER_FILES": "/nonexistent.json"])
        #expect(result.status == 0)
        let lines = result.output.split(separator: "\n").map { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let vulkan = lines.compactMap { $0 }.first { $0["backend"] as? String == "vulkan" }
        #expect(vulkan?["available"] as? Bool == false)
        #expect((vulkan?["reason"] as? String)?.isEmpty == false)
    }

    @Test func choosingAnUnavailableBackendIsOneClearError() throws {
        let result = try CommandLine.run(["profile", "matmul", "--m", "4", "--n", "4", "--k", "4", "--backend", "vulkan"],
                                         environment: ["LORAFUSE_VULKAN_LOADER": "/nonexistent/libvulkan.so.1"])
        #expect(result.status != 0)
        #expect(result.error.contains("backend 'vulkan' is unavailable"))
        let unknown = try CommandLine.run(["profile", "matmul", "--backend", "tpu"])
        #expect(unknown.status != 0)
        #expect(unknown.error.contains("unknown backend 'tpu'"))
    }

    /// GGUF files are recognised by their magic; the listing is the reader's, and a broken
    /// header is one line and a non-zero exit.
    @Test func inspectReadsGGUF() throws {
        let path = CommandLine.repository.appendingPathComponent("Tests/Fixtures/gguf/types.gguf").path
        let result = try CommandLine.run(["inspect", path, "--json"])
        #expect(result.status == 0, "\(result.error)")
        let object = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as! [String: Any]
        let tensors = object["tensors"] as! [[String: Any]]
        #expect(object["format"] as? String == "gguf" && tensors.count == 15)
        #expect(tensors.contains { $0["name"] as? String == "quant.q4_k" && $0["dtype"] as? String == "Q4_K" && $0["shape"] as? [Int] == [3, 512] })
        let scratch = ScratchFolder("lorafuse-gguf")
        let broken = scratch.url.appendingPathComponent("broken.gguf")
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[8] = 0xFF; bytes[15] = 0x7F  // an absurd tensor count
        try Data(bytes).write(to: broken)
        let refused = try CommandLine.run(["inspect", broken.path])
        #expect(refused.status != 0)
        #expect(refused.error.contains("not a readable GGUF file") && refused.error.split(separator: "\n").count == 1, "\(refused.error)")
    }

    @Test func inspectListsExactlyTheTensorsTorchWrote() throws {
        let path = CommandLine.repository.appendingPathComponent("Tests/Fixtures/safetensors/torch_written.safetensors").path
        let result = try CommandLine.run(["inspect", path, "--json"])
        #expect(result.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as! [String: Any]
        let listed = (object["tensors"] as! [[String: Any]]).map { "\($0["name"]!) \($0["dtype"]!) \($0["shape"]!)" }
        let expectation = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath:
            path.replacingOccurrences(of: ".safetensors", with: ".json")))) as! [String: Any]
        let expected = (expectation["tensors"] as! [[String: Any]]).map { "\($0["name"]!) \($0["dtype"]!) \($0["shape"]!)" }
        #expect(Set(listed) == Set(expected))
        #expect(listed.count == expected.count)
    }

    @Test func hostileFilesGiveOneLineAndNonZeroExit() throws {
        let scratch = ScratchFolder("lorafuse-cli")
        defer { withExtendedLifetime(scratch) {} }  // the folder lives until the test ends
        let folder = scratch.url
        let headers = ["{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999,99999999999],\"data_offsets\":[0,4]}}",
                       String(repeating: "[", count: 10_000), "{\"a\":1"]
        for (index, header) in headers.enumerated() {
            var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) }
            bytes += Array(header.utf8) + [0, 0, 0, 0]
            let file = folder.appendingPathComponent("bad\(index).safetensors")
            try Data(bytes).write(to: file)
            let result = try CommandLine.run(["inspect", file.path])
            #expect(result.status != 0)
            #expect(result.error.trimmingCharacters(in: .newlines).split(separator: "\n").count == 1, "\(result.error)")
            #expect(result.error.contains(file.path))
        }
    }

    @Test func parityOpsPassesOnEveryAvailableBackend() throws {
        let backends = try CommandLine.run(["backends", "--json"]).output.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        for backend in backends where backend["available"] as? Bool == true {
            let name = backend["backend"] as! String
            let result = try CommandLine.run(["parity-ops", "--backend", name, "--filter", "attention"])
            #expect(result.status == 0, "\(name): \(result.output)\(result.error)")
            #expect(result.output.contains("passed, 0 failed"))
        }
    }
}

@Suite struct DitCommandTests {
    static let fixture = CommandLine.repository.appendingPathComponent("Tests/Fixtures/flux/schnell-tiny")

    @Test(arguments: CLIBackends.names)
    func ditWritesTheSampleDiffusersComputes(_ backend: String) throws {
        let scratch = ScratchFolder("lorafuse-dit")
        defer { withExtendedLifetime(scratch) {} }  // the folder lives until the test ends
        let folder = scratch.url
        let output = folder.appendingPathComponent("out.safetensors").path
        let result = try CommandLine.run(["dit", "--model", Self.fixture.path, "--inputs", Self.fixture.appendingPathComponent("inputs.safetensors").path,
                                          "--output", output, "--backend", backend, "--json"])
        #expect(result.status == 0, "\(result.error)")
        let line = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
        #expect(line?["command"] as? String == "dit")
        #expect((line?["peak_rss_bytes"] as? Int ?? 0) > 0)
        let sample = try SafeTensorsFile(path: output).tensor(named: "sample")
        let expected = try SafeTensorsFile(path: Self.fixture.appendingPathComponent("expected.safetensors").path).tensor(named: "sample")
        #expect(sample.type == expected.type)
        #expect(relativeError(actual: sample.floats(), expected: expected.doubles()) <= 1e-4)
    }

    @Test(arguments: CLIBackends.names)
    func encodeWritesWhatFluxPipelineEncodes(_ backend: String) throws {
        let scratch = ScratchFolder("lorafuse-encode")
        defer { withExtendedLifetime(scratch) {} }  // the folder lives until the test ends
        let pipeline = CommandLine.repository.appendingPathComponent("Tests/Fixtures/pipeline/flux-tiny")
        let expected = try SafeTensorsFile(path: pipeline.appendingPathComponent("expected_cat.safetensors").path)
        let output = scratch.url.appendingPathComponent("text.safetensors").path
        let result = try CommandLine.run(["encode", "--text-encoders", pipeline.path, "--prompt", expected.metadata["prompt"] ?? "",
                                          "--max-sequence-length", "48", "--output", output, "--backend", backend, "--json"])
        #expect(result.status == 0, "\(result.error)")
        let line = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
        #expect(line?["command"] as? String == "encode" && line?["t5_tokens"] as? Int == 48)
        let written = try SafeTensorsFile(path: output)
        for name in ["encoder_hidden_states", "pooled_projections"] {
            let error = relativeError(actual: try written.tensor(named: name).floats(), expected: try expected.tensor(named: name).doubles())
            #expect(error <= 1e-4, "\(name): \(error)")
        }
        #expect(try written.tensor(named: "t5_input_ids").dtype == .int64)
        #expect(try written.tensor(named: "t5_input_ids").doubles() == expected.tensor(named: "t5_input_ids").doubles())
    }

    @Test func tokenizePrintsTheReferenceIds() throws {
        let text = CommandLine.repository.appendingPathComponent("Tests/Fixtures/text")
        let cases = try JSONSerialization.jsonObject(with: Data(contentsOf: text.appendingPathComponent("prompts.json"))) as! [String: Any]
        let first = (cases["cases"] as! [[String: Any]])[2]
        let prompt = first["prompt"] as! String
        for (folder, key, length) in [("tokenizer", "clip", "77"), ("tokenizer_2", "t5", "96")] {
            let result = try CommandLine.run(["tokenize", "--tokenizer", CommandLine.repository.appendingPathComponent("Tests/Fixtures/pipeline/flux-tiny/\(folder)").path,
                                              "--prompt", prompt, "--length", length])
            #expect(result.status == 0, "\(result.error)")
            let ids = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [Int]
            #expect(ids == first[key] as? [Int], "\(key): \(result.output)")
        }
        let missing = try CommandLine.run(["tokenize", "--tokenizer", "/nonexistent", "--prompt", "a"])
        #expect(missing.status != 0 && missing.error.contains("/nonexistent"), "\(missing.error)")
    }

    /// transformers 5's CLIP ids by default, transformers 4's with --clip-tokenizer-rules, on
    /// prompts where they differ (CJK, emoji with ZWJ).
    @Test func tokenizeFollowsTheChosenCLIPRules() throws {
        let text = CommandLine.repository.appendingPathComponent("Tests/Fixtures/text")
        let file = try JSONSerialization.jsonObject(with: Data(contentsOf: text.appendingPathComponent("prompts-transformers5.json"))) as! [String: Any]
        let differing = (file["cases"] as! [[String: Any]]).filter { case_ in
            let prompt = case_["prompt"] as! String
            return case_["clip_transformers4"] != nil && (prompt.contains("東京") || prompt.contains("\u{200D}"))
        }
        #expect(differing.count >= 2)
        let folder = CommandLine.repository.appendingPathComponent("Tests/Fixtures/pipeline/flux-tiny/tokenizer").path
        for case_ in differing.prefix(2) {
            let prompt = case_["prompt"] as! String
            for (rules, key) in [([String](), "clip"), (["--clip-tokenizer-rules", "transformers4"], "clip_transformers4")] {
                let result = try CommandLine.run(["tokenize", "--tokenizer", folder, "--prompt", prompt, "--length", "77"] + rules)
                #expect(result.status == 0, "\(result.error)")
                let ids = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [Int]
                #expect(ids == case_[key] as? [Int], "\(prompt.debugDescription) \(rules): \(result.output)")
            }
        }
        let bad = try CommandLine.run(["tokenize", "--tokenizer", folder, "--prompt", "a", "--clip-tokenizer-rules", "transformers3"])
        #expect(bad.status != 0 && bad.error.contains("transformers3"), "\(bad.error)")
    }

    @Test(arguments: CLIBackends.names)
    func generateWritesDiffusersImage(_ backend: String) throws {
        let scratch = ScratchFolder("lorafuse-generate")
        defer { withExtendedLifetime(scratch) {} }  // the folder lives until the test ends
        let fixtures = CommandLine.repository.appendingPathComponent("Tests/Fixtures/pipeline")
        let expected = try SafeTensorsFile(path: fixtures.appendingPathComponent("generate-dev.safetensors").path)
        let image = scratch.url.appendingPathComponent("out.png").path
        let latents = scratch.url.appendingPathComponent("latents.safetensors").path
        let result = try CommandLine.run(["generate", "--model", fixtures.appendingPathComponent("flux-tiny").path,
                                          "--prompt", expected.metadata["prompt"] ?? "", "--width", "48", "--height", "32", "--steps", "4",
                                          "--max-sequence-length", "48", "--noise", fixtures.appendingPathComponent("generate-dev.safetensors").path,
                                          "--output", image, "--output-latents", latents, "--backend", backend, "--json"])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.error.isEmpty, "no progress bar when stderr is not a terminal: \(result.error)")
        let line = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
        #expect(line?["command"] as? String == "generate" && line?["steps"] as? Int == 4)
        #expect((line?["step_seconds"] as? [Double])?.count == 4 && (line?["peak_rss_bytes"] as? Int ?? 0) > 0)
        let png = try PNGWriter.decode(Data(contentsOf: URL(fileURLWithPath: image)))
        #expect(png.width == 48 && png.height == 32 && png.text["prompt"] == expected.metadata["prompt"])
        #expect(png.text["parameters"]?.contains("steps: 4") == true)
        let reference = try expected.tensor(named: "image").doubles()
        let close = zip(png.pixels, reference).filter { abs(Double($0) - $1) <= 1 }.count
        #expect(Double(close) >= 0.999 * Double(reference.count), "\(close)/\(reference.count) values within 1/255")
        let error = relativeError(actual: try SafeTensorsFile(path: latents).tensor(named: "latents").floats(),
                                  expected: try expected.tensor(named: "latents_3").doubles())
        #expect(error <= 1e-3, "latents: \(error)")
    }

    /// A ComfyUI all-in-one checkpoint made from the transformers-5 tiny pipeline
    /// (Tools/reference/make_comfyui_fixtures.py) as --model, with the tokenizers and the
    /// transformer's config given: the same image and latents as diffusers on the folder it was
    /// made from. Without tokenizers, or without the config its shapes cannot show: one line, no image.
    @Test func generateFromAComfyUIAllInOneCheckpoint() throws {
        let scratch = ScratchFolder("lorafuse-comfyui")
        defer { withExtendedLifetime(scratch) {} }  // the folder lives until the test ends
        let fixtures = CommandLine.repository.appendingPathComponent("Tests/Fixtures/pipeline")
        let pipeline = fixtures.appendingPathComponent("flux-tiny-transformers5")
        let checkpoint = fixtures.appendingPathComponent("flux-tiny-comfyui.safetensors").path
        let expected = try SafeTensorsFile(path: pipeline.appendingPathComponent("generate-dev.safetensors").path)
        let steps = Int(expected.metadata["steps"] ?? "") ?? 0
        let image = scratch.url.appendingPathComponent("out.png").path
        let latents = scratch.url.appendingPathComponent("latents.safetensors").path
        let common = ["generate", "--model", checkpoint, "--prompt", expected.metadata["prompt"] ?? "",
                      "--width", expected.metadata["width"] ?? "", "--height", expected.metadata["height"] ?? "", "--steps", "\(steps)",
                      "--max-sequence-length", "48", "--noise", pipeline.appendingPathComponent("generate-dev.safetensors").path,
                      "--output", image]
        let noTokenizers = try CommandLine.run(common)
        #expect(noTokenizers.status != 0 && noTokenizers.error.contains("--clip-tokenizer and --t5-tokenizer"), "\(noTokenizers.error)")
        let tokenizers = ["--clip-tokenizer", pipeline.appendingPathComponent("tokenizer").path,
                          "--t5-tokenizer", pipeline.appendingPathComponent("tokenizer_2").path]
        let noConfig = try CommandLine.run(common + tokenizers)
        #expect(noConfig.status != 0 && noConfig.error.contains("--config"), "\(noConfig.error)")
        #expect(!FileManager.default.fileExists(atPath: image))
        let result = try CommandLine.run(common + tokenizers + ["--config", pipeline.appendingPathComponent("transformer/config.json").path,
                                                               "--output-latents", latents])
        #expect(result.status == 0, "\(result.error)")
        let png = try PNGWriter.decode(Data(contentsOf: URL(fileURLWithPath: image)))
        let reference = try expected.tensor(named: "image").doubles()
        let close = zip(png.pixels, reference).filter { abs(Double($0) - $1) <= 1 }.count
        #expect(Double(close) >= 0.999 * Double(reference.count), "\(close)/\(reference.count) values within 1/255")
        let error = relativeError(actual: try SafeTensorsFile(path: latents).tensor(named: "latents").floats(),
                                  expected: try expected.tensor(named: "latents_\(steps - 1)").doubles())
        #expect(error <= 1e-3, "latents: \(error)")
    }

    /// A pool built, searched, changed and searched again from the command line, and
    /// `generate --auto-loras` fusing what it retrieves.
    @Test func poolCommandsAndAutoLoRAs() throws {
        let scratch = ScratchFolder("lorafuse-pool")
        defer { withExtendedLifetime(scratch) {} }  // the folder lives until the test ends
        let fixtures = CommandLine.repository.appendingPathComponent("Tests/Fixtures")
        let pipeline = fixtures.appendingPathComponent("pipeline/flux-tiny").path
        let db = ["--db", scratch.url.appendingPathComponent("pool.sqlite").path]
        let lora = scratch.url.appendingPathComponent("tiny.safetensors")
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("pipeline/lora-tiny.safetensors"), to: lora)
        let encoder = fixtures.appendingPathComponent("retrieval/encoder-flux-tiny.safetensors").path
        var result = try CommandLine.run(["pool", "add", lora.path, "--encoder", encoder, "--caption", "tiny stripes"] + db)
        #expect(result.status == 0 && result.output.hasPrefix("added"), "\(result.output) \(result.error)")
        result = try CommandLine.run(["pool", "add", lora.path, "--encoder", encoder] + db)
        #expect(result.output.hasPrefix("unchanged"), "\(result.output)")
        result = try CommandLine.run(["pool", "search", "a red star", "--text-encoders", pipeline, "-k", "3", "--json"] + db)
        let match = try JSONSerialization.jsonObject(with: Data(result.output.split(separator: "\n")[0].utf8)) as? [String: Any]
        #expect(result.status == 0 && match?["name"] as? String == "tiny" && match?["caption"] as? String == "tiny stripes", "\(result.output) \(result.error)")
        // A LoRA's own embedding (lora embed) finds it first, with cosine 1.
        let query = scratch.url.appendingPathComponent("query.safetensors").path
        result = try CommandLine.run(["lora", "embed", "--encoder", encoder, "--lora", lora.path, "--output", query])
        #expect(result.status == 0, "\(result.error)")
        result = try CommandLine.run(["pool", "search", "--embedding", query, "--json"] + db)
        let own = try JSONSerialization.jsonObject(with: Data(result.output.split(separator: "\n")[0].utf8)) as? [String: Any]
        #expect(own?["name"] as? String == "tiny" && abs((own?["similarity"] as? Double ?? 0) - 1) < 1e-5, "\(result.output) \(result.error)")
        // generate --auto-loras 1 applies the retrieved LoRA exactly as --lora would.
        let common = ["generate", "--model", pipeline, "--prompt", "a red star", "--width", "48", "--height", "32", "--steps", "2",
                      "--max-sequence-length", "16", "--seed", "3"]
        let auto = scratch.url.appendingPathComponent("auto.png").path, explicit = scratch.url.appendingPathComponent("explicit.png").path
        result = try CommandLine.run(common + ["--auto-loras", "1", "--output", auto, "--json"] + db)
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.contains("\"retrieved\"") && result.output.contains("\"tiny\""), "\(result.output)")
        result = try CommandLine.run(common + ["--lora", lora.path, "--output", explicit])
        #expect(result.status == 0, "\(result.error)")
        #expect(try PNGWriter.decode(Data(contentsOf: URL(fileURLWithPath: auto))).pixels
                    == PNGWriter.decode(Data(contentsOf: URL(fileURLWithPath: explicit))).pixels)
        // A vanished file is reported by list and refused by --auto-loras; remove empties the pool.
        try FileManager.default.removeItem(at: lora)
        result = try CommandLine.run(["pool", "list"] + db)
        #expect(result.output.contains("[missing]"), "\(result.output)")
        result = try CommandLine.run(common + ["--auto-loras", "1", "--output", auto] + db)
        #expect(result.status != 0 && result.error.contains("missing"), "\(result.error)")
        result = try CommandLine.run(["pool", "remove", "tiny"] + db)
        #expect(result.status == 0)
        result = try CommandLine.run(["pool", "list"] + db)
        #expect(result.output.isEmpty)
    }

    /// Four `pool add` processes writing five LoRAs each into one new pool while a fifth process
    /// searches it: every add and every search succeeds, all 20 entries land, the file is sound.
    @Test func poolKeepsEveryEntryUnderConcurrentWriters() throws {
        let scratch = ScratchFolder("lorafuse-pool-concurrent")
        defer { withExtendedLifetime(scratch) {} }  // the folder lives until the test ends
        let fixtures = CommandLine.repository.appendingPathComponent("Tests/Fixtures")
        let encoder = fixtures.appendingPathComponent("retrieval/encoder-flux-tiny.safetensors").path
        let pool = scratch.url.appendingPathComponent("pool.sqlite").path
        let writers = 4, perWriter = 5
        let files: [[String]] = try (0..<writers).map { writer in
            try (0..<perWriter).map { index in
                let url = scratch.url.appendingPathComponent("w\(writer)-\(index).safetensors")
                try FileManager.default.copyItem(at: fixtures.appendingPathComponent("pipeline/lora-tiny.safetensors"), to: url)
                return url.path
            }
        }
        let query = scratch.url.appendingPathComponent("query.safetensors").path
        let embedded = try CommandLine.run(["lora", "embed", "--encoder", encoder, "--lora", files[0][0], "--output", query])
        #expect(embedded.status == 0, "\(embedded.error)")
        let results = Mutex<[(String, CommandLine.Result)]>([])
        DispatchQueue.concurrentPerform(iterations: writers + 1) { job in
            if job < writers {
                let result = (try? CommandLine.run(["pool", "add"] + files[job] + ["--encoder", encoder, "--db", pool]))
                    ?? CommandLine.Result(status: -1, output: "", error: "could not start")
                results.withLock { $0.append(("add \(job)", result)) }
            } else {
                for round in 0..<12 {
                    let result = (try? CommandLine.run(["pool", "search", "--embedding", query, "-k", "3", "--db", pool]))
                        ?? CommandLine.Result(status: -1, output: "", error: "could not start")
                    results.withLock { $0.append(("search \(round)", result)) }
                }
            }
        }
        for (label, result) in results.withLock({ $0 }) {
            #expect(result.status == 0, "\(label): \(result.error)")
        }
        let list = try CommandLine.run(["pool", "list", "--db", pool])
        #expect(list.output.split(separator: "\n").count == writers * perWriter, "\(list.output)")
        #expect(try LoRAPool(path: pool).integrityCheck() == ["ok"])
    }

    @Test func generateFailsClearlyWithoutPartialOutput() throws {
        let scratch = ScratchFolder("lorafuse-generate")
        defer { withExtendedLifetime(scratch) {} }  // the folder lives until the test ends
        let pipeline = CommandLine.repository.appendingPathComponent("Tests/Fixtures/pipeline/flux-tiny")
        let image = scratch.url.appendingPathComponent("out.png").path
        let common = ["--prompt", "a cat", "--width", "48", "--height", "32", "--steps", "1", "--max-sequence-length", "8"]
        // Not a pipeline folder.
        var result = try CommandLine.run(["generate", "--model", scratch.url.path, "--output", image] + common)
        #expect(result.status != 0 && result.error.contains("transformer"), "\(result.error)")
        // A pipeline without its VAE.
        let partial = scratch.url.appendingPathComponent("partial")
        try FileManager.default.createDirectory(at: partial, withIntermediateDirectories: true)
        for part in ["transformer", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"] {
            try FileManager.default.createSymbolicLink(at: partial.appendingPathComponent(part), withDestinationURL: pipeline.appendingPathComponent(part))
        }
        result = try CommandLine.run(["generate", "--model", partial.path, "--output", image] + common)
        #expect(result.status != 0 && result.error.contains("VAE"), "\(result.error)")
        // An unwritable output path, and a size the VAE cannot make.
        result = try CommandLine.run(["generate", "--model", pipeline.path, "--output", "/nonexistent/folder/out.png"] + common)
        #expect(result.status != 0 && result.error.contains("/nonexistent/folder"), "\(result.error)")
        result = try CommandLine.run(["generate", "--model", pipeline.path, "--output", image, "--prompt", "a cat", "--width", "50",
                                      "--height", "32", "--steps", "1"])
        #expect(result.status != 0 && result.error.contains("multiples of 4"), "\(result.error)")
        for failure in [result] { #expect(failure.error.trimmingCharacters(in: .newlines).split(separator: "\n").count == 1, "\(failure.error)") }
        #expect(!FileManager.default.fileExists(atPath: image))
        #expect((try FileManager.default.contentsOfDirectory(atPath: scratch.url.path)).allSatisfy { !$0.contains(".tmp-") })
    }

    @Test func encodeNamesWhatIsMissing() throws {
        let scratch = ScratchFolder("lorafuse-encode")
        defer { withExtendedLifetime(scratch) {} }  // the folder lives until the test ends
        let output = scratch.url.appendingPathComponent("text.safetensors").path
        let models = CommandLine.repository.appendingPathComponent("Tests/Fixtures/text/models")
        // Not a pipeline folder.
        var result = try CommandLine.run(["encode", "--text-encoders", models.path, "--prompt", "a cat", "--output", output])
        #expect(result.status != 0 && result.error.contains("text_encoder/"), "\(result.error)")
        // Separate parts with a tokenizer whose ids do not fit the encoder's table.
        let tokenizers = CommandLine.repository.appendingPathComponent("Tests/Fixtures/pipeline/flux-tiny")
        result = try CommandLine.run(["encode", "--clip", models.appendingPathComponent("clip-a/clip_l.safetensors").path,
                                      "--clip-tokenizer", tokenizers.appendingPathComponent("tokenizer").path,
                                      "--t5", models.appendingPathComponent("t5-a/t5xxl_fp8_e4m3fn.safetensors").path,
                                      "--t5-tokenizer", tokenizers.appendingPathComponent("tokenizer_2").path,
                                      "--prompt", "a cat", "--output", output])
        #expect(result.status != 0 && result.error.contains("embeddings"), "\(result.error)")
        result = try CommandLine.run(["encode", "--clip", "x", "--prompt", "a cat"])
        #expect(result.status != 0 && result.error.contains("--t5-tokenizer"), "\(result.error)")
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    @Test func badInputsFailWithoutWritingOutput() throws {
        let scratch = ScratchFolder("lorafuse-dit")
        defer { withExtendedLifetime(scratch) {} }  // the folder lives until the test ends
        let folder = scratch.url
        let output = folder.appendingPathComponent("out.safetensors").path
        let otherInputs = CommandLine.repository.appendingPathComponent("Tests/Fixtures/flux/dev-tiny/inputs.safetensors").path
        let result = try CommandLine.run(["dit", "--model", Self.fixture.path, "--inputs", otherInputs, "--output", output])
        #expect(result.status != 0)
        #expect(result.error.contains("hidden_states"), "\(result.error)")
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    /// Two peft LoRAs with scales, hot and merged, on both backends, against peft in float64.
    @Test(arguments: ["cpu", "vulkan"], [false, true])
    func ditAppliesLoRAs(_ backend: String, merge: Bool) throws {
        let scratch = ScratchFolder("lorafuse-dit")
        defer { withExtendedLifetime(scratch) {} }  // the folder lives until the test ends
        let folder = scratch.url
        let fixtures = CommandLine.repository.appendingPathComponent("Tests/Fixtures")
        let output = folder.appendingPathComponent("out.safetensors").path
        let result = try CommandLine.run(["dit", "--model", fixtures.appendingPathComponent("flux/dev-tiny").path,
                                          "--inputs", fixtures.appendingPathComponent("flux/dev-tiny/inputs.safetensors").path,
                                          "--lora", fixtures.appendingPathComponent("lora/all.peft.safetensors").path + ":0.7",
                                          "--lora", fixtures.appendingPathComponent("lora/partial.peft.safetensors").path + ":-1.3",
                                          "--output", output, "--backend", backend, "--json"] + (merge ? ["--merge"] : []))
        #expect(result.status == 0, "\(result.error)")
        let line = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
        #expect(line?["lora_mode"] as? String == (merge ? "merged" : "hot"))
        #expect(line?["loras"] as? Int == 2)
        #expect((line?["merge_seconds"] as? Double).map { $0 >= 0 } ?? !merge)
        let sample = try SafeTensorsFile(path: output).tensor(named: "sample")
        let expected = try SafeTensorsFile(path: fixtures.appendingPathComponent("lora/expected_pair.safetensors").path).tensor(named: "sample")
        #expect(relativeError(actual: sample.floats(), expected: expected.doubles()) <= 1e-4)
    }

    /// A truncated LoRA, or one made for another model, is one line and no output file.
    @Test func badLoRAsFailWithOneLineAndNoOutput() throws {
        let scratch = ScratchFolder("lorafuse-dit")
        defer { withExtendedLifetime(scratch) {} }  // the folder lives until the test ends
        let folder = scratch.url
        let fixtures = CommandLine.repository.appendingPathComponent("Tests/Fixtures")
        let lora = fixtures.appendingPathComponent("lora/all.kohya.safetensors")
        let truncated = folder.appendingPathComponent("truncated.safetensors")
        try Data(contentsOf: lora).prefix(3000).write(to: truncated)
        let output = folder.appendingPathComponent("out.safetensors").path
        for (file, message) in [(truncated.path, "not a LoRA file"), (lora.path, "has shape")] {
            // The dev-tiny LoRA on schnell-tiny: a shape mismatch naming the key.
            let result = try CommandLine.run(["dit", "--model", Self.fixture.path, "--inputs", Self.fixture.appendingPathComponent("inputs.safetensors").path,
                                              "--lora", file, "--output", output])
            #expect(result.status != 0)
            #expect(result.error.contains(message) && result.error.contains(file), "\(result.error)")
            #expect(result.error.split(separator: "\n").count == 1, "\(result.error)")
            #expect(!FileManager.default.fileExists(atPath: output))
        }
        let inspect = try CommandLine.run(["lora", "inspect", lora.path, "--json"])
        #expect(inspect.status == 0, "\(inspect.error)")
        let line = try JSONSerialization.jsonObject(with: Data(inspect.output.utf8)) as? [String: Any]
        #expect(line?["format"] as? String == "kohya")
        #expect(line?["layers"] as? Int == 50)
    }

    /// `klora plan --json` and `dit --fusion klora` against the K-LoRA reference.
    @Test(arguments: CLIBackends.names)
    func kloraFromTheCommandLine(_ backend: String) throws {
        let scratch = ScratchFolder("lorafuse-klora")
        defer { withExtendedLifetime(scratch) {} }  // the folder lives until the test ends
        let folder = scratch.url
        let fixtures = CommandLine.repository.appendingPathComponent("Tests/Fixtures")
        let content = fixtures.appendingPathComponent("lora/all.peft.safetensors").path
        let style = fixtures.appendingPathComponent("lora/partial.peft.safetensors").path
        let cache = ["LORAFUSE_CACHE": folder.path]
        let plan = try CommandLine.run(["klora", "plan", "--content", content, "--style", style, "--backend", backend, "--json"], environment: cache)
        #expect(plan.status == 0, "\(plan.error)")
        let line = try JSONSerialization.jsonObject(with: Data(plan.output.utf8)) as? [String: Any]
        #expect((line?["units"] as? [Any])?.count == 18)
        #expect(line?["content_share_start"] as? Double == 1 && line?["content_share_end"] as? Double == 0)
        let output = folder.appendingPathComponent("out.safetensors").path
        let result = try CommandLine.run(["dit", "--model", fixtures.appendingPathComponent("flux/dev-tiny").path,
                                          "--inputs", fixtures.appendingPathComponent("flux/dev-tiny/inputs.safetensors").path,
                                          "--fusion", "klora", "--content", content, "--style", style + ":0.8", "--progress", "0.45",
                                          "--backend", backend, "--output", output], environment: cache)
        #expect(result.status == 0, "\(result.error)")
        // plans.json: PROGRESS[2] = 0.45.
        let expected = try SafeTensorsFile(path: fixtures.appendingPathComponent("klora/all-partial.safetensors").path).tensor(named: "sample_2")
        #expect(relativeError(actual: try SafeTensorsFile(path: output).tensor(named: "sample").floats(), expected: expected.doubles()) <= 1e-4)
        for bad in [["--fusion", "klora", "--content", content], ["--fusion", "blend", "--content", content, "--style", style],
                    ["--fusion", "klora", "--content", content, "--style", style, "--progress", "1.5"]] {
            let failure = try CommandLine.run(["dit", "--model", fixtures.appendingPathComponent("flux/dev-tiny").path,
                                               "--inputs", fixtures.appendingPathComponent("flux/dev-tiny/inputs.safetensors").path] + bad)
            #expect(failure.status != 0 && !failure.error.isEmpty, "\(bad)")
        }
    }

    /// `estlora plan --json` and `dit --fusion estlora` against the EST-LoRA reference
    /// (Tools/reference/make_estlora_fixtures.py: a 4-step run; `dit --progress` names the step).
    @Test(arguments: CLIBackends.names)
    func estloraFromTheCommandLine(_ backend: String) throws {
        let scratch = ScratchFolder("lorafuse-estlora")
        defer { withExtendedLifetime(scratch) {} }  // the folder lives until the test ends
        let folder = scratch.url
        let fixtures = CommandLine.repository.appendingPathComponent("Tests/Fixtures")
        let model = fixtures.appendingPathComponent("flux/dev-tiny").path
        let content = fixtures.appendingPathComponent("lora/all.peft.safetensors").path
        let style = fixtures.appendingPathComponent("lora/partial.peft.safetensors").path
        let cache = ["LORAFUSE_CACHE": folder.path]
        let references = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtures.appendingPathComponent("estlora/plans.json"))) as? [String: Any]
        let reference = (references?["pairs"] as? [String: Any])?["all-partial"] as? [String: Any]
        let expectedChoices = ((reference?["schedules"] as? [String: Any])?["s*"] as? [String: Any])?["content_layers"] as? [[String]]
        let plan = try CommandLine.run(["estlora", "plan", "--content", content, "--style", style, "--model", model, "--steps", "4",
                                        "--backend", backend, "--json"], environment: cache)
        #expect(plan.status == 0, "\(plan.error)")
        let line = try JSONSerialization.jsonObject(with: Data(plan.output.utf8)) as? [String: Any]
        #expect((line?["layers"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == reference?["order"] as? [String])
        #expect(((line?["content_layers"] as? [[String]]) ?? []).map(Set.init) == (expectedChoices ?? [[]]).map(Set.init))
        #expect(line?["schedule"] as? String == "periodic" && line?["beta"] as? Double == 1.5 * 0.85)
        let output = folder.appendingPathComponent("out.safetensors").path
        let result = try CommandLine.run(["dit", "--model", model, "--inputs", fixtures.appendingPathComponent("flux/dev-tiny/inputs.safetensors").path,
                                          "--fusion", "estlora", "--content", content, "--style", style + ":0.8", "--steps", "4", "--progress", "0.5",
                                          "--estlora-schedule", "linear", "--backend", backend, "--output", output], environment: cache)
        #expect(result.status == 0, "\(result.error)")
        let expected = try SafeTensorsFile(path: fixtures.appendingPathComponent("estlora/all-partial-linear.safetensors").path).tensor(named: "sample_2")
        #expect(relativeError(actual: try SafeTensorsFile(path: output).tensor(named: "sample").floats(), expected: expected.doubles()) <= 1e-4)
        for (bad, message) in [(["--estlora-schedule", "cosine"], "unknown --estlora-schedule cosine"),
                               (["--estlora-alpha", "0"], "--estlora-alpha must be positive"),
                               (["--estlora-beta", "inf"], "--estlora-beta must be a finite number")] {
            let failure = try CommandLine.run(["dit", "--model", model, "--inputs", fixtures.appendingPathComponent("flux/dev-tiny/inputs.safetensors").path,
                                               "--fusion", "estlora", "--content", content, "--style", style] + bad, environment: cache)
            #expect(failure.status != 0 && failure.error.contains(message), "\(bad): \(failure.error)")
        }
    }

    /// `dit --fusion autolora` against DiffSynth's LoraMerger on a tiny DiffSynth DiT.
    @Test(arguments: CLIBackends.names)
    func autoloraFromTheCommandLine(_ backend: String) throws {
        let scratch = ScratchFolder("lorafuse-autolora")
        defer { withExtendedLifetime(scratch) {} }  // the folder lives until the test ends
        let folder = scratch.url
        let fixtures = CommandLine.repository.appendingPathComponent("Tests/Fixtures/autolora")
        func path(_ name: String) -> String { fixtures.appendingPathComponent("\(name).safetensors").path }
        let output = folder.appendingPathComponent("out.safetensors").path
        let result = try CommandLine.run(["dit", "--model", path("flux_bfl"), "--inputs", path("inputs"), "--fusion", "autolora",
                                          "--fusion-weights", path("mergers"), "--lora", path("lora_1"), "--lora", path("lora_2") + ":0.7",
                                          "--backend", backend, "--output", output])
        #expect(result.status == 0, "\(result.error)")
        let expected = try SafeTensorsFile(path: path("expected_two")).tensor(named: "sample")
        #expect(relativeError(actual: try SafeTensorsFile(path: output).tensor(named: "sample").floats(), expected: expected.doubles()) <= 1e-4)
        // Merger weights for another model: one line, no output.
        let other = folder.appendingPathComponent("other.safetensors").path
        let failure = try CommandLine.run(["dit", "--model", CommandLine.repository.appendingPathComponent("Tests/Fixtures/flux/dev-wide").path,
                                           "--inputs", CommandLine.repository.appendingPathComponent("Tests/Fixtures/flux/dev-wide/inputs.safetensors").path,
                                           "--fusion", "autolora", "--fusion-weights", path("mergers"), "--output", other])
        #expect(failure.status != 0 && failure.error.contains("mergers.safetensors"), "\(failure.error)")
        #expect(!FileManager.default.fileExists(atPath: other))
    }

    @Test func parityReportsEveryLabelledNode() throws {
        let result = try CommandLine.run(["parity", "--model", Self.fixture.appendingPathComponent("flux_bfl.safetensors").path,
                                          "--inputs", Self.fixture.appendingPathComponent("inputs.safetensors").path,
                                          "--backend", "cpu", "--against", "cpu"])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.contains("sample"))
        #expect(result.output.contains("all within"))
    }
}

/// `lorafuse demo` and `lorafuse eval` on the bundled toy world.
@Suite struct ToyWorldCommandTests {
    @Test func demoWritesTheGridItDescribes() throws {
        let scratch = ScratchFolder("lorafuse-demo")
        let output = scratch.url.appendingPathComponent("grid.png").path
        let result = try CommandLine.run(["demo", "--world", CommandLine.repository.appendingPathComponent("Examples/toyworld").path,
                                          "--pairs", "1", "--columns", "content", "klora", "--scale", "2", "--no-labels", "--output", output])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.contains("wrote \(output)") && result.output.contains("columns: content, klora"), "\(result.output)")
        let image = try PNGWriter.decode(Data(contentsOf: URL(fileURLWithPath: output)))
        #expect(image.width == 2 * 64 + 3 * 2 && image.height == 64 + 2 * 2)
        // Two different methods on the same seed: the cells differ.
        func cell(_ left: Int) -> [UInt8] {
            var bytes: [UInt8] = []
            for y in 2..<66 {
                let start: Int = (y * image.width + left) * 3
                bytes += image.pixels[start..<start + 64 * 3]
            }
            return bytes
        }
        #expect(cell(2) != cell(68))
    }

    @Test func demoWithoutAWorldFailsWithoutOutput() throws {
        let scratch = ScratchFolder("lorafuse-demo")
        let output = scratch.url.appendingPathComponent("grid.png").path
        let result = try CommandLine.run(["demo", "--world", scratch.url.appendingPathComponent("nowhere").path, "--output", output])
        #expect(result.status != 0 && result.error.contains("world.json"), "\(result.error)")
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    @Test func evalFusionReportsScoresPerMethod() throws {
        let result = try CommandLine.run(["eval", "fusion", "--world", CommandLine.repository.appendingPathComponent("Examples/toyworld").path,
                                          "--pairs", "2", "--seeds", "2", "--methods", "content", "style", "--resamples", "200", "--json"])
        #expect(result.status == 0, "\(result.error)")
        let report = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
        #expect(report?["judges"] as? [String] == ["A", "B"])
        let methods = report?["methods"] as? [[String: Any]] ?? []
        #expect(methods.map { $0["method"] as? String } == ["content alone", "style alone", "content", "style"])
        let images = report?["images"] as? [[String: Any]] ?? []
        for method in methods {
            let name = method["method"] as? String ?? ""
            let count = method["images"] as? Int ?? 0
            #expect(images.filter { $0["method"] as? String == name }.count == count && count > 0, "\(name)")
            let judged = name == "content alone" ? ["object"] : name == "style alone" ? ["style"] : ["object", "style", "both"]
            for key in ["object", "style", "both"] {
                if judged.contains(key) {
                    let value = method[key] as? Double ?? -1
                    #expect((0...1).contains(value), "\(name) \(key): \(value)")
                } else {
                    #expect(method[key] is NSNull, "\(name) \(key) is not judged")
                }
            }
            // Every judge gives each judged figure with an interval around its mean.
            let perJudge = method["judges"] as? [String: [String: Any]] ?? [:]
            #expect(Set(perJudge.keys) == ["A", "B"])
            for (judge, entry) in perJudge {
                for key in judged {
                    let interval = entry[key] as? [String: Double] ?? [:]
                    let (low, mean, high) = (interval["low"] ?? 2, interval["mean"] ?? -1, interval["high"] ?? -1)
                    #expect(0 <= low && low <= mean && mean <= high && high <= 1, "\(name) \(judge) \(key): \(interval)")
                }
                // The per-image scores give the mean back.
                let hits = images.filter { $0["method"] as? String == name }.map {
                    (($0["judges"] as? [String: [String: Any]])?[judge]?[judged[0]] as? Bool) == true ? 1.0 : 0.0
                }
                let mean = (entry[judged[0]] as? [String: Double])?["mean"] ?? -1
                #expect(abs(hits.reduce(0, +) / Double(max(1, hits.count)) - mean) < 1e-12, "\(name) \(judge)")
            }
            if judged.count == 3 {
                #expect((method["both"] as? Double ?? 2) <= min(method["object"] as? Double ?? 0, method["style"] as? Double ?? 0))
            }
        }
        // Paired differences between the two fusion rows, per judge and metric.
        let differences = report?["differences"] as? [[String: Any]] ?? []
        #expect(differences.count == 2 * 3)
        #expect(differences.allSatisfy { $0["a"] as? String == "content" && $0["b"] as? String == "style" })
    }

    @Test func evalRetrievalRanksEveryHeldOutCaption() throws {
        let world = CommandLine.repository.appendingPathComponent("Examples/toyworld")
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: world.appendingPathComponent("world.json"))) as? [String: Any]
        let queries = (manifest?["retrieval_queries"] as? [Any])?.count ?? 0
        let result = try CommandLine.run(["eval", "retrieval", "--world", world.path, "--query", "zorbo=content-zorbo.safetensors", "--json"])
        #expect(result.status == 0, "\(result.error)")
        let report = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
        #expect(report?["queries"] as? Int == queries + 1 && queries > 0)
        let (top1, top5) = (report?["recall_at_1"] as? Double ?? -1, report?["recall_at_5"] as? Double ?? -1)
        #expect(0 <= top1 && top1 <= top5 && top5 <= 1, "\(top1) \(top5)")
        let results = report?["results"] as? [[String: Any]] ?? []
        #expect(results.last?["expected"] as? String == "content-zorbo.safetensors")
        let bad = try CommandLine.run(["eval", "retrieval", "--world", world.path, "--query", "zorbo=nothing.safetensors"])
        #expect(bad.status != 0 && bad.error.contains("no LoRA named nothing.safetensors"), "\(bad.error)")
    }
}

/// The backends the command-line tests run on: the CPU, and Vulkan where a device is found
/// and always in CI (a missing device fails there); elsewhere the Vulkan cases are left out
/// of the arguments, so the run shows fewer cases rather than passing ones that did nothing.
enum CLIBackends {
    static let names: [String] = {
        BuiltinBackends.register()
        let vulkan = (try? BackendRegistry.shared.plugin(named: "vulkan"))?.availability().devices.isEmpty == false
        return ["cpu"] + (vulkan || ProcessInfo.processInfo.environment["CI"] != nil ? ["vulkan"] : [])
    }()
}
