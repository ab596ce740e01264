import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld
import Testing

/// Bad input as a hostile user gives it: every case must end in one clear error and a
/// non-zero exit — no crash (a signal), no hang (a 60 s limit), no allocation past a memory
/// limit, no file left in the output folder.
@Suite struct HostileInputTests {
    static let fixtures = CommandLine.repository.appendingPathComponent("Tests/Fixtures")
    static let pipeline = fixtures.appendingPathComponent("pipeline/flux-tiny").path
    static let lora = fixtures.appendingPathComponent("pipeline/lora-tiny.safetensors").path

    struct Outcome {
        var status: Int32
        var signalled: Bool
        var timedOut: Bool
        var output: String
        var error: String
    }

    /// Runs `lorafuse` under a virtual-memory limit and a time limit.
    static func run(_ arguments: [String], environment extra: [String: String] = [:], seconds: Double = 60,
                    memoryKiB: Int = 16 << 20) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "ulimit -v \(memoryKiB); exec \"$0\" \"$@\"", CommandLine.executable.path] + arguments
        process.environment = ProcessInfo.processInfo.environment.merging(extra) { $1 }
        let output = Pipe(), error = Pipe()
        process.standardOutput = output
        process.standardError = error
        try process.run()
        let timer = DispatchSource.makeTimerSource()
        nonisolated(unsafe) var timedOut = false
        timer.schedule(deadline: .now() + seconds)
        timer.setEventHandler { timedOut = true; process.terminate() }
        timer.resume()
        let outData = output.fileHandleForReading.readDataToEndOfFile()
        let errData = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        timer.cancel()
        return Outcome(status: process.terminationStatus, signalled: process.terminationReason == .uncaughtSignal,
                       timedOut: timedOut, output: String(decoding: outData, as: UTF8.self), error: String(decoding: errData, as: UTF8.self))
    }

    /// Expects one clear refusal naming `expected`, and nothing new in `folder`.
    static func expectRefusal(_ arguments: [String], _ expected: String, environment: [String: String] = [:],
                              folder: URL? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let before = folder.map { (try? FileManager.default.contentsOfDirectory(atPath: $0.path)) ?? [] } ?? []
        let outcome = try run(arguments, environment: environment)
        let label = arguments.joined(separator: " ")
        #expect(!outcome.timedOut, "hung: \(label)", sourceLocation: sourceLocation)
        #expect(!outcome.signalled, "crashed: \(label)\n\(outcome.error.prefix(600))", sourceLocation: sourceLocation)
        #expect(outcome.status != 0, "accepted: \(label)", sourceLocation: sourceLocation)
        #expect(outcome.error.contains(expected), "\(label)\nexpected \(expected) in: \(outcome.error.prefix(600))", sourceLocation: sourceLocation)
        #expect(!outcome.error.contains("Fatal error"), "\(outcome.error.prefix(600))", sourceLocation: sourceLocation)
        if let folder {
            let after = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
            #expect(Set(after) == Set(before), "left behind: \(Set(after).subtracting(before)) by \(label)", sourceLocation: sourceLocation)
        }
    }

    static func generate(_ extra: [String], output: URL) -> [String] {
        ["generate", "--model", pipeline, "--prompt", "a red star", "--width", "48", "--height", "32", "--steps", "2",
         "--max-sequence-length", "16", "--output", output.appendingPathComponent("out.png").path,
         "--output-latents", output.appendingPathComponent("latents.safetensors").path] + extra
    }

    @Test func generationNumbersAreBounded() throws {
        let scratch = ScratchFolder("lorafuse-hostile")
        let cases: [([String], String)] = [
            (["--guidance", "nan"], "guidance must be a finite number"),
            (["--guidance", "1e300"], "guidance must be a finite number"),
            (["--width", "100000", "--height", "100000"], "pixel limit"),
            (["--width", "16", "--height", "1048576"], "pixel limit"),
            (["--width", "4611686018427387904"], "pixel limit"),
            (["--width", "-48"], "must be positive"),
            (["--steps", "1000000000000"], "--steps must be in 1...1000"),
            (["--steps", "9223372036854775807"], "--steps must be in 1...1000"),
            (["--steps", "-3"], "--steps must be in 1...1000"),
            (["--fixed-fraction", "5", "--fusion", "fixed", "--content", Self.lora, "--style", Self.lora], "--fixed-fraction must be in [0, 1]"),
            (["--auto-loras=-2"], "--auto-loras must be in 0...64"),
            (["--klora-alpha", "nan"], "--klora-alpha must be a finite number"),
            (["--lora", "\(Self.lora):nan"], "bad LoRA scale: nan is not finite"),
            (["--lora", "\(Self.lora):3e38"], "bad LoRA scale: 3e38 is out of range"),
            (["--lora", ""], "the LoRA path is empty"),
            (["--max-image-pixels", "0"], "--max-image-pixels must be at least 1"),
        ]
        for (extra, expected) in cases {
            try Self.expectRefusal(Self.generate(extra, output: scratch.url), expected, folder: scratch.url)
        }
    }

    /// Files that are not regular files are refused by type, before a read could block.
    @Test func fifosAndFoldersAreRefusedWithoutBlocking() throws {
        let scratch = ScratchFolder("lorafuse-hostile")
        let fifo = scratch.url.appendingPathComponent("lora.safetensors").path
        #expect(mkfifo(fifo, 0o644) == 0)
        let output = ScratchFolder("lorafuse-hostile-out")
        try Self.expectRefusal(Self.generate(["--lora", fifo], output: output.url), "not a regular file (a FIFO)", folder: output.url)
        let dit = ["dit", "--model", Self.fixtures.appendingPathComponent("flux/schnell-tiny").path, "--output",
                   output.url.appendingPathComponent("sample.safetensors").path]
        try Self.expectRefusal(dit + ["--inputs", fifo], "not a regular file (a FIFO)", folder: output.url)
        try Self.expectRefusal(dit + ["--inputs", "/dev/zero"], "not a regular file (a character device)", folder: output.url)
        try Self.expectRefusal(["tokenize", "--tokenizer", Self.pipeline + "/tokenizer", "--prompts", fifo], "not a regular file")
    }

    /// LoRA files with broken values: each refused with the key that is wrong.
    @Test func brokenLoRAValuesAreRefused() throws {
        let scratch = ScratchFolder("lorafuse-hostile")
        let output = ScratchFolder("lorafuse-hostile-out")
        let source = try SafeTensorsFile(path: Self.lora)
        func variant(_ name: String, metadata: [String: String] = [:], edit: (inout [String: HostTensor]) -> Void) throws -> String {
            var tensors = source.allTensors()
            edit(&tensors)
            let path = scratch.url.appendingPathComponent(name).path
            try SafeTensorsWriter.write(tensors, metadata: metadata, to: path)
            return path
        }
        let downKey = source.names.sorted().first { $0.contains("lora_A") || $0.contains("lora_down") }!
        let nan = try variant("nan.safetensors") { tensors in
            var values = tensors[downKey]!.floats()
            values[values.count / 2] = .nan
            tensors[downKey] = HostTensor(shape: tensors[downKey]!.shape, floats: values)
        }
        try Self.expectRefusal(Self.generate(["--lora", nan], output: output.url), "'\(downKey)' holds a non-finite value", folder: output.url)
        let module = String(downKey.dropLast(downKey.hasSuffix(".lora_A.weight") ? ".lora_A.weight".count : ".lora_down.weight".count))
        let boolAlpha = try variant("bool-alpha.safetensors") { $0[module + ".alpha"] = HostTensor(shape: [], dtype: .bool, values: [1]) }
        try Self.expectRefusal(Self.generate(["--lora", boolAlpha], output: output.url), "stored as BOOL", folder: output.url)
        let hugeAlpha = try variant("huge-alpha.safetensors") { $0[module + ".alpha"] = HostTensor(shape: [], floats: [-1e30]) }
        try Self.expectRefusal(Self.generate(["--lora", hugeAlpha], output: output.url), "outside [0, 10000]", folder: output.url)
        let stringAlpha = try variant("string-alpha.safetensors", metadata: ["lora_adapter_metadata": "{\"lora_alpha\": \"8\"}"]) { _ in }
        try Self.expectRefusal(Self.generate(["--lora", stringAlpha], output: output.url), "'lora_alpha' must be a finite number", folder: output.url)
    }

    /// dit inputs: non-finite values, wrong dtypes and empty batches are refused by name.
    @Test func ditInputsAreChecked() throws {
        let scratch = ScratchFolder("lorafuse-hostile")
        let model = Self.fixtures.appendingPathComponent("flux/schnell-tiny")
        let inputs = try SafeTensorsFile(path: model.appendingPathComponent("inputs.safetensors").path).allTensors()
        func variant(_ name: String, _ edit: (inout [String: HostTensor]) -> Void) throws -> String {
            var tensors = inputs
            edit(&tensors)
            let path = scratch.url.appendingPathComponent(name).path
            try SafeTensorsWriter.write(tensors, to: path)
            return path
        }
        let output = ScratchFolder("lorafuse-hostile-out")
        let hidden = inputs["hidden_states"]!
        let cases: [(String, (inout [String: HostTensor]) -> Void, String)] = [
            ("nan", { $0["hidden_states"] = HostTensor(shape: hidden.shape, floats: Array(repeating: .nan, count: hidden.elementCount)) },
             "'hidden_states' holds a non-finite value"),
            ("timestep", { $0["timestep"] = HostTensor(shape: [hidden.shape[0]], floats: Array(repeating: .infinity, count: hidden.shape[0])) },
             "'timestep' holds a non-finite value"),
            ("bool", { $0["hidden_states"] = HostTensor(shape: hidden.shape, dtype: .bool, values: Array(repeating: 0, count: hidden.elementCount)) },
             "'hidden_states' is BOOL"),
            ("empty", { $0["hidden_states"] = HostTensor(shape: [0, hidden.shape[1], hidden.shape[2]], floats: []) }, "at least 1"),
        ]
        for (name, edit, expected) in cases {
            try Self.expectRefusal(["dit", "--model", model.path, "--inputs", try variant("\(name).safetensors", edit),
                                    "--output", output.url.appendingPathComponent("sample.safetensors").path], expected, folder: output.url)
        }
    }

    /// Model configs with absurd or mistyped numbers: one line naming the key.
    @Test func configNumbersAreBoundedAndTyped() throws {
        let scratch = ScratchFolder("lorafuse-hostile")
        let source = Self.fixtures.appendingPathComponent("flux/schnell-tiny")
        let cases: [(String, String, String)] = [
            ("heads", "\"num_attention_heads\": 4611686018427387904", "num_attention_heads is 4611686018427387904"),
            ("axes", "\"axes_dims_rope\": [4611686018427387904, 4611686018427387904, 4]", "axes_dims_rope"),
            ("fraction", "\"num_layers\": 2.5", "'num_layers' must be an integer, got a number 2.5"),
            ("null", "\"num_layers\": null", "'num_layers' must be an integer, got null"),
            ("billion", "\"num_layers\": 1000000000", "num_layers is 1000000000; expected 0...1000"),
            ("string", "\"guidance_embeds\": \"no\"", "'guidance_embeds' must be true or false"),
        ]
        for (name, entry, expected) in cases {
            let folder = scratch.url.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let weights = "diffusion_pytorch_model.safetensors"
            try FileManager.default.createSymbolicLink(at: folder.appendingPathComponent(weights),
                                                       withDestinationURL: source.appendingPathComponent("transformer/\(weights)"))
            // The entry is written as raw text (JSONSerialization cannot write 2.5 as is, or 2^62 exactly).
            var config = try JSONSerialization.jsonObject(with: Data(contentsOf: source.appendingPathComponent("transformer/config.json"))) as! [String: Any]
            config[String(entry.split(separator: ":")[0].dropFirst().dropLast())] = nil
            let rest = String(decoding: try JSONSerialization.data(withJSONObject: config), as: UTF8.self)
            try ("{\(entry), " + rest.dropFirst()).write(to: folder.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
            try Self.expectRefusal(["dit", "--model", folder.path, "--inputs", source.appendingPathComponent("inputs.safetensors").path],
                                   expected)
        }
    }

    @Test func tokenizerFilesAndLengthsAreBounded() throws {
        let scratch = ScratchFolder("lorafuse-hostile")
        try Self.expectRefusal(["tokenize", "--tokenizer", Self.pipeline + "/tokenizer", "--prompt", "a", "--length", "2000000000"],
                               "--length must be in 1...65536")
        // T5's tokenizer.json with an added token at id −1, then at 3e9.
        let t5 = URL(fileURLWithPath: Self.pipeline + "/tokenizer_2/tokenizer.json")
        let original = try JSONSerialization.jsonObject(with: Data(contentsOf: t5)) as! [String: Any]
        for (name, id) in [("negative", -1), ("huge", 3_000_000_000)] {
            var json = original
            let folder = scratch.url.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            var added = json["added_tokens"] as! [[String: Any]]
            added.append(["id": id, "content": "<evil>", "special": true])
            json["added_tokens"] = added
            try JSONSerialization.data(withJSONObject: json).write(to: folder.appendingPathComponent("tokenizer.json"))
            try Self.expectRefusal(["tokenize", "--tokenizer", folder.path, "--prompt", "a"], "added token \"<evil>\" has id \(id)")
        }
        // SentencePiece with extra_ids of two billion, and a piece type past 2^63.
        let spiece = scratch.url.appendingPathComponent("spiece")
        try FileManager.default.createDirectory(at: spiece, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Self.pipeline + "/tokenizer_2/spiece.model", toPath: spiece.appendingPathComponent("spiece.model").path)
        try Data("{\"extra_ids\": 2000000000}".utf8).write(to: spiece.appendingPathComponent("tokenizer_config.json"))
        try Self.expectRefusal(["tokenize", "--tokenizer", spiece.appendingPathComponent("spiece.model").path, "--prompt", "a"],
                               "extra_ids is 2000000000")
        // piece { piece: "a", type: 2^63 + 1 } then an <unk> piece: the odd type is not a crash.
        let oddType: [UInt8] = [0x0A, 0x0E, 0x0A, 0x01, 0x61, 0x18] + [0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]
            + [0x0A, 0x09, 0x0A, 0x05] + Array("<unk>".utf8) + [0x18, 0x02]
        let odd = scratch.url.appendingPathComponent("odd.model")
        try Data(oddType).write(to: odd)
        let outcome = try Self.run(["tokenize", "--tokenizer", odd.path, "--prompt", "a"])
        #expect(!outcome.signalled && !outcome.timedOut, "\(outcome.error.prefix(400))")
        // CLIP's vocab.json with a lone surrogate in a key and a negative id.
        let clip = scratch.url.appendingPathComponent("clip")
        try FileManager.default.copyItem(atPath: Self.pipeline + "/tokenizer", toPath: clip.path)
        let vocab = clip.appendingPathComponent("vocab.json")
        let text = try String(contentsOf: vocab, encoding: .utf8)
        try ("{\"\\ud800\\u0041\": 5, " + text.dropFirst()).write(to: vocab, atomically: true, encoding: .utf8)
        let surrogate = try Self.run(["tokenize", "--tokenizer", clip.path, "--prompt", "a"])
        #expect(!surrogate.signalled && surrogate.status == 0, "\(surrogate.error.prefix(400))")
        try ("{\"evil</w>\": -3, " + text.dropFirst()).write(to: vocab, atomically: true, encoding: .utf8)
        try Self.expectRefusal(["tokenize", "--tokenizer", clip.path, "--prompt", "a"], "is negative")
    }

    @Test func profileSizesAreBounded() throws {
        try Self.expectRefusal(["profile", "matmul", "--m", "1000000", "--n", "1000000", "--k", "1000000"], "the limit is half this machine's memory")
        try Self.expectRefusal(["profile", "attention", "--tokens", "10000000"], "the limit is half this machine's memory")
        try Self.expectRefusal(["profile", "matmul", "--m", "4611686018427387904", "--n", "4", "--k", "4"], "too large to address")
    }

    /// A tuning variable that does not parse is one warning naming it; the run goes on.
    @Test func unparsableTuningVariablesWarn() throws {
        let outcome = try Self.run(["profile", "matmul", "--m", "4", "--n", "4", "--k", "4", "--repeat", "1"],
                                   environment: ["LORAFUSE_CPU_THREADS": "lots", "LORAFUSE_TYPO": "1"])
        #expect(outcome.status == 0, "\(outcome.error)")
        #expect(outcome.error.contains("warning: LORAFUSE_CPU_THREADS=lots is not an integer in 1...4096; ignored"), "\(outcome.error)")
        #expect(outcome.error.contains("warning: LORAFUSE_TYPO is not a LoRAFuse variable"), "\(outcome.error)")
    }

    /// SIGINT or SIGTERM during an atomic write removes its temporary files, and the process
    /// dies of that signal.
    @Test(arguments: [SIGTERM, SIGINT])
    func signalsRemoveTemporaryFiles(_ signal: Int32) throws {
        let scratch = ScratchFolder("lorafuse-hostile")
        let process = Process()
        process.executableURL = CommandLine.executable
        process.arguments = ["self-test", "hold-write", scratch.url.appendingPathComponent("a.png").path,
                             scratch.url.appendingPathComponent("b.safetensors").path]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        var line = Data()
        while !String(decoding: line, as: UTF8.self).contains("\n") {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line += chunk
        }
        let staged = try FileManager.default.contentsOfDirectory(atPath: scratch.url.path)
        #expect(staged.count == 2 && staged.allSatisfy { $0.contains(".tmp-") }, "\(staged)")
        kill(process.processIdentifier, signal)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal && process.terminationStatus == signal)
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.url.path).isEmpty)
    }

    /// A pool that `pool add` creates and cannot fill is not left behind.
    @Test func failedPoolAddLeavesNoDatabase() throws {
        let scratch = ScratchFolder("lorafuse-hostile")
        let broken = scratch.url.appendingPathComponent("broken.safetensors")
        try Data("not a safetensors file".utf8).write(to: broken)
        let pool = scratch.url.appendingPathComponent("pools")
        let encoder = Self.fixtures.appendingPathComponent("retrieval/encoder-flux-tiny.safetensors").path
        try Self.expectRefusal(["pool", "add", broken.path, "--encoder", encoder, "--db", pool.appendingPathComponent("pool.sqlite").path],
                               "broken.safetensors", folder: nil)
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: pool.path)) ?? []).isEmpty)
        // A search with a query that cannot be compared is an error, not an empty answer.
        let zero = scratch.url.appendingPathComponent("zero.safetensors").path
        try SafeTensorsWriter.write(["embedding": HostTensor(shape: [4], floats: [0, 0, 0, 0])], to: zero)
        try Self.expectRefusal(["pool", "search", "--embedding", zero, "--db", pool.appendingPathComponent("search.sqlite").path],
                               "has no direction")
    }
}
