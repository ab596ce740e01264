import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// `lorafuse profile`: times single kernels on a backend, best of `--repeat` runs.
struct ProfileCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "profile",
        abstract: "Time kernels (matmul, attention) on a backend and report GFLOP/s.",
        subcommands: [ProfileMatmulCommand.self, ProfileAttentionCommand.self, ProfileGateCommand.self]
    )
}

struct BackendOptions: ParsableArguments {
    @Option(name: .long, help: "Backend to run on (see `lorafuse backends`).")
    var backend = "cpu"

    @Option(name: .long, parsing: .unconditional, help: "Device index of that backend.")
    var device = 0

    @Option(name: .long, help: ArgumentHelp(
        "Device memory the backend may use (e.g. 2GiB, 512MiB, 3000000000); weights past it are streamed block by block.",
        discussion: "Default: what the device reports as available, less 10 %. The CPU backend reads weights in place and ignores it."))
    var maxDeviceMemory: String?

    /// What the options ask of the backend, checked.
    func settings() throws -> BackendSettings {
        guard let text = maxDeviceMemory else { return BackendSettings() }
        guard let bytes = ByteSize.parse(text), bytes > 0 else {
            throw ValidationError("--max-device-memory must be a positive byte count such as 2GiB, 512MiB or 3000000000, got '\(text)'")
        }
        return BackendSettings(maxDeviceMemory: bytes)
    }

    /// The backend behind a scheduler: nodes it cannot run go to the CPU backend.
    func makeBackend() throws -> any Backend {
        try BackendRegistry.shared.makeScheduledBackend(named: backend, deviceIndex: device, settings: settings())
    }

    /// The backend alone, for parity checks and profiles that must measure its own kernels.
    func makeUnscheduledBackend() throws -> any Backend {
        try BackendRegistry.shared.makeBackend(named: backend, deviceIndex: device, settings: settings())
    }
}

struct ProfileOptions: ParsableArguments {
    @Option(name: .customLong("repeat"), parsing: .unconditional, help: "Timed runs after one warm-up run; the best is reported.")
    var repeatCount: Int = 5

    @Flag(name: .long, help: "Print one JSON object per measurement.")
    var json = false

    @Option(name: .long, parsing: .unconditional, help: "Seed for the random operands.")
    var seed: UInt64 = 1
}

/// Checks what a profile would allocate before it does: every size multiplied with overflow
/// checks, and the total (operands, with `copies` of each for outputs and device copies)
/// within half of this machine's memory.
func checkProfileSize(_ tensors: [[Int]], bytesPerElement: Int = 4, copies: Int = 2) throws {
    var total = 0
    for dimensions in tensors {
        var bytes = bytesPerElement * copies
        for dimension in dimensions {
            let (product, overflow) = bytes.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw ValidationError("the operands \(dimensions) are too large to address") }
            bytes = product
        }
        let (sum, overflow) = total.addingReportingOverflow(bytes)
        guard !overflow else { throw ValidationError("the operands are too large to address") }
        total = sum
    }
    let limit = Int(ProcessInfo.processInfo.physicalMemory / 2)
    guard total <= limit else {
        throw ValidationError("these sizes need about \(total / 1_048_576) MiB; the limit is half this machine's memory, \(limit / 1_048_576) MiB")
    }
}

/// Best wall time of a whole execution (upload, kernels, download) and best time of the
/// measured node alone (Vulkan: GPU timestamps; CPU: wall time around the kernel).
struct Timing {
    var wallSeconds = Double.infinity
    var kernelSeconds = Double.infinity
}

/// Runs `graph` once to warm up (pipelines, weight upload), then `repeats` times.
func measure(_ backend: any Backend, _ graph: Graph, _ inputs: [String: HostTensor], node: Tensor, repeats: Int) throws -> Timing {
    let resident = try backend.makeResident(weightsOf: graph)
    defer { resident.release() }
    _ = try backend.execute(graph, inputs: inputs)
    var timing = Timing()
    for _ in 0..<max(1, repeats) {
        let start = DispatchTime.now().uptimeNanoseconds
        let result = try backend.execute(graph, inputs: inputs, options: ExecutionOptions(recordTimings: true))
        timing.wallSeconds = min(timing.wallSeconds, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        if let seconds = result.nodeSeconds[node.id], seconds > 0 { timing.kernelSeconds = min(timing.kernelSeconds, seconds) }
    }
    if !timing.kernelSeconds.isFinite { timing.kernelSeconds = timing.wallSeconds }
    return timing
}

func report(_ fields: [String: Any], json: Bool, text: String) throws {
    print(json ? try JSONOutput.line(fields) : text)
}

struct ProfileMatmulCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "matmul",
        abstract: "Time C[M,N] = A[M,K] · Wᵀ with W [N,K] stored as --dtype (a Linear layer)."
    )

    @Option(name: .long, parsing: .unconditional) var m = 1024
    @Option(name: .long, parsing: .unconditional) var n = 1024
    @Option(name: .long, parsing: .unconditional) var k = 1024
    @Option(name: .long, help: "Weight dtype: f32, f16, bf16, f8_e4m3, f8_e5m2 or a GGUF block type (q8_0, q4_0, q4_1, q5_0, q5_1, q2_k … q6_k; random blocks).") var dtype = "f32"
    @OptionGroup var backendOptions: BackendOptions
    @OptionGroup var options: ProfileOptions

    func run() throws {
        guard let weightType = DType(rawValue: dtype.uppercased()), DType.linearWeightTypes.contains(weightType) else {
            throw ValidationError("--dtype must be f32, f16, bf16, f8_e4m3, f8_e5m2, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k or q6_k, got '\(dtype)'")
        }
        guard k % weightType.blockElements == 0 else {
            throw ValidationError("--k must be a multiple of \(weightType.blockElements) for \(weightType.name) blocks, got \(k)")
        }
        guard m > 0, n > 0, k > 0 else { throw ValidationError("--m, --n and --k must be positive") }
        try checkProfileSize([[m, k], [n, k], [m, n]])
        let backend = try backendOptions.makeUnscheduledBackend()
        var random = SeededRandom(seed: options.seed)
        var graph = Graph()
        let a = graph.input("a", [m, k])
        let w = graph.parameter("w", weightType.isBlockQuantized ? random.blocks([n, k], dtype: weightType) : random.tensor([n, k], dtype: weightType))
        let product = try graph.matmul(a, w, transposeB: true)
        graph.markOutput(product)
        let timing = try measure(backend, graph, ["a": random.tensor([m, k])], node: product, repeats: options.repeatCount)
        let seconds = timing.kernelSeconds
        let gflops = 2 * Double(m) * Double(n) * Double(k) / seconds / 1e9
        let bytes = Double(m * k * 4 + weightType.byteCount(elements: n * k) + m * n * 4)
        try report(["op": "matmul", "backend": backend.name, "device": backend.device.name, "m": m, "n": n, "k": k,
                    "dtype": weightType.name, "seconds": seconds, "wall_seconds": timing.wallSeconds, "gflops": gflops,
                    "gbps": bytes / seconds / 1e9],
                   json: options.json,
                   text: String(format: "matmul %dx%dx%d %@ on %@ (%@): kernel %.3f ms, %.1f GFLOP/s, %.1f GB/s; whole run %.3f ms",
                                m, n, k, weightType.name, backend.name, backend.device.name, seconds * 1e3, gflops,
                                bytes / seconds / 1e9, timing.wallSeconds * 1e3))
    }
}

struct ProfileAttentionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "Time softmax(Q·Kᵀ/√D)·V for L tokens and H heads of D (FLUX: L=4096, H=24, D=128)."
    )

    @Option(name: .long, parsing: .unconditional) var tokens = 1024
    @Option(name: .long, parsing: .unconditional) var heads = 24
    @Option(name: .customLong("head-dim"), parsing: .unconditional) var headDim = 128
    @OptionGroup var backendOptions: BackendOptions
    @OptionGroup var options: ProfileOptions

    func run() throws {
        guard tokens > 0, heads > 0, headDim > 0 else { throw ValidationError("sizes must be positive") }
        try checkProfileSize(Array(repeating: [tokens, heads, headDim], count: 4))
        let backend = try backendOptions.makeUnscheduledBackend()
        var random = SeededRandom(seed: options.seed)
        var graph = Graph()
        let shape: Shape = [1, tokens, heads, headDim]
        let q = graph.input("q", shape), k = graph.input("k", shape), v = graph.input("v", shape)
        let attended = try graph.attention(query: q, key: k, value: v)
        graph.markOutput(attended)
        let inputs = ["q": random.tensor(shape), "k": random.tensor(shape), "v": random.tensor(shape)]
        let timing = try measure(backend, graph, inputs, node: attended, repeats: options.repeatCount)
        let seconds = timing.kernelSeconds
        // Two L×L×D products per head: the usual effective-FLOP count for attention.
        let gflops = 4 * Double(tokens) * Double(tokens) * Double(headDim) * Double(heads) / seconds / 1e9
        let bytes = Double(4 * shape.elementCount * 4)  // q, k, v read once, output written once
        try report(["op": "attention", "backend": backend.name, "device": backend.device.name, "tokens": tokens,
                    "heads": heads, "head_dim": headDim, "seconds": seconds, "wall_seconds": timing.wallSeconds,
                    "gflops": gflops, "gbps": bytes / seconds / 1e9],
                   json: options.json,
                   text: String(format: "attention L=%d H=%d D=%d on %@ (%@): kernel %.3f ms, %.1f GFLOP/s; whole run %.3f ms",
                                tokens, heads, headDim, backend.name, backend.device.name, seconds * 1e3, gflops,
                                timing.wallSeconds * 1e3))
    }
}

/// The best (over repeats) total time of the compute nodes of `graph` (kernel timestamps on
/// Vulkan, wall time per node on the CPU), after one warm-up run.
func measureComputeNodes(_ backend: any Backend, _ graph: Graph, _ inputs: [String: HostTensor], repeats: Int) throws -> Double {
    let resident = try backend.makeResident(weightsOf: graph)
    defer { resident.release() }
    _ = try backend.execute(graph, inputs: inputs)
    var best = Double.infinity
    for _ in 0..<max(1, repeats) {
        let result = try backend.execute(graph, inputs: inputs, options: ExecutionOptions(recordTimings: true))
        let total = graph.nodes.reduce(0.0) { sum, node in
            switch node.op {
            case .input, .parameter, .reshape: return sum
            default: return sum + (result.nodeSeconds[node.id] ?? 0)
            }
        }
        best = min(best, total)
    }
    return best
}

struct ProfileGateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gate",
        abstract: "Time AutoLoRA's fused LoRA gate against the same math as separate ops (LayerNorm, mul, add, sigmoid).")

    @Option(name: .long, parsing: .unconditional) var tokens = 4096
    @Option(name: .long, parsing: .unconditional) var width = 3072
    @Option(name: .long, parsing: .unconditional, help: "LoRA outputs gated (1 to 8).") var loras = 2
    @Option(name: .long, parsing: .unconditional, help: "Also time the gate that forms each dᵢ from rank-R activations (lowRankGate) against dᵢ = u·upᵀ as matmuls, then the gate; 0: skip.")
    var rank = 0
    @OptionGroup var backendOptions: BackendOptions
    @OptionGroup var options: ProfileOptions

    func run() throws {
        guard tokens > 0, width > 0, (1...Graph.maximumGateInputs).contains(loras) else {
            throw ValidationError("--tokens and --width must be positive, --loras 1 to \(Graph.maximumGateInputs)")
        }
        guard rank >= 0 else { throw ValidationError("--rank must be at least 0, got \(rank)") }
        try checkProfileSize(Array(repeating: [tokens, width], count: 2 * loras + 4) + [[tokens, max(rank, 1) * loras], [width, max(rank, 1) * loras]])
        let backend = try backendOptions.makeUnscheduledBackend()
        var random = SeededRandom(seed: options.seed)
        let shape: Shape = [tokens, width]
        var inputs = ["y": random.tensor(shape)]
        for index in 0..<loras { inputs["d\(index)"] = random.tensor(shape, in: -0.1...0.1) }
        let parameters = random.tensor([9, width])

        var fused = Graph()
        let y = fused.input("y", shape)
        let outputs = (0..<loras).map { fused.input("d\($0)", shape) }
        let gate = try fused.loraGate(y, parameters: fused.parameter("merger", parameters), loraOutputs: outputs)
        fused.markOutput(gate)

        // The same math as separate ops, each writing its result to memory.
        var separate = Graph()
        let base = separate.input("y", shape)
        let rows = (0..<9).map { row in
            separate.parameter("p\(row)", HostTensor(shape: [width], floats: Array(parameters.floats()[row * width..<(row + 1) * width])))
        }
        let normedBase = try separate.layerNorm(base, weight: rows[5], bias: rows[6])
        var sum = base
        for index in 0..<loras {
            let d = separate.input("d\(index)", shape)
            let normed = try separate.layerNorm(d, weight: rows[7], bias: rows[8])
            var logit = try separate.add(separate.mul(normedBase, rows[0]), separate.mul(normed, rows[1]))
            logit = try separate.add(logit, separate.mul(separate.mul(normedBase, normed), rows[2]))
            let gated = try separate.sigmoid(separate.add(logit, rows[4]))
            sum = try separate.add(sum, separate.mul(separate.mul(gated, d), rows[3]))
        }
        separate.markOutput(sum)

        let fusedSeconds = try measureComputeNodes(backend, fused, inputs, repeats: options.repeatCount)
        let separateSeconds = try measureComputeNodes(backend, separate, inputs, repeats: options.repeatCount)
        let bytes = Double((loras + 2) * tokens * width * 4 + 9 * width * 4)  // y₀ and each dᵢ read, the output written
        try report(["op": "lora_gate", "backend": backend.name, "device": backend.device.name, "tokens": tokens, "width": width,
                    "loras": loras, "seconds": fusedSeconds, "separate_seconds": separateSeconds,
                    "speedup": separateSeconds / fusedSeconds, "gbps": bytes / fusedSeconds / 1e9],
                   json: options.json,
                   text: String(format: "lora gate %dx%d, N=%d on %@ (%@): fused %.3f ms (%.1f GB/s), separate ops %.3f ms, %.2fx",
                                tokens, width, loras, backend.name, backend.device.name, fusedSeconds * 1e3,
                                bytes / fusedSeconds / 1e9, separateSeconds * 1e3, separateSeconds / fusedSeconds))
        guard rank > 0 else { return }

        let total = rank * loras
        let lowInputs = ["y": inputs["y"]!, "u": random.tensor([tokens, total], in: -0.5...0.5)]
        let up = random.tensor([width, total], in: -0.1...0.1)
        var lowRank = Graph()
        let lowRankGate = try lowRank.lowRankGate(lowRank.input("y", shape), parameters: lowRank.parameter("merger", parameters),
                                                  lowRank: lowRank.input("u", [tokens, total]), up: lowRank.parameter("up", up),
                                                  ranks: Array(repeating: rank, count: loras))
        lowRank.markOutput(lowRankGate)
        // The same with each dᵢ written to memory by a matmul first.
        var written = Graph()
        let u = written.input("u", [tokens, total]), upNode = written.parameter("up", up)
        let ds = try (0..<loras).map { index in
            try written.matmul(written.slice(u, axis: 1, start: index * rank, end: (index + 1) * rank),
                               written.slice(upNode, axis: 1, start: index * rank, end: (index + 1) * rank), transposeB: true)
        }
        written.markOutput(try written.loraGate(written.input("y", shape), parameters: written.parameter("merger", parameters), loraOutputs: ds))
        let lowRankSeconds = try measureComputeNodes(backend, lowRank, lowInputs, repeats: options.repeatCount)
        let writtenSeconds = try measureComputeNodes(backend, written, lowInputs, repeats: options.repeatCount)
        try report(["op": "low_rank_gate", "backend": backend.name, "device": backend.device.name, "tokens": tokens, "width": width,
                    "loras": loras, "rank": rank, "seconds": lowRankSeconds, "written_seconds": writtenSeconds,
                    "speedup": writtenSeconds / lowRankSeconds],
                   json: options.json,
                   text: String(format: "low-rank gate %dx%d, N=%d, rank %d on %@: fused %.3f ms, dᵢ as matmuls then the gate %.3f ms, %.2fx",
                                tokens, width, loras, rank, backend.name, lowRankSeconds * 1e3, writtenSeconds * 1e3,
                                writtenSeconds / lowRankSeconds))
    }
}
