import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// `lorafuse dit`: one forward pass of the FLUX transformer (docs/contracts.md).
struct DitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dit",
        abstract: "Run one forward pass of a FLUX transformer: inputs safetensors in, `sample` safetensors out.",
        discussion: """
        --model: a diffusers folder (with transformer/ or the transformer folder itself), or a single checkpoint with
        Black Forest Labs names (flux1-dev.safetensors; ComfyUI's model.diffusion_model. prefix and all-in-one files too).
        --config: for a single file, diffusers' transformer/config.json, for what shapes do not show (RoPE axes).
        --inputs: hidden_states [B, L, C], encoder_hidden_states [B, T, J], pooled_projections [B, P],
        timestep [B] (in [0, 1]), guidance [B] (guidance-distilled models), img_ids [L, 3], txt_ids [T, 3].
        --output: sample [B, L, C] float32, written atomically.
        --lora FILE[:SCALE]: diffusers/peft, kohya, BFL, XLabs or DiffSynth LoRA files, applied hot (beside the base
        matmuls) unless --merge folds them into the weights first.
        """
    )

    @Option(name: .long, help: "Diffusers FLUX folder (pipeline folder or its transformer/ folder) or a single BFL/ComfyUI checkpoint.")
    var model: String

    @Option(name: .long, help: "A single file's config: diffusers' transformer/config.json (or a folder holding it).")
    var config: String?

    @Option(name: .long, help: "Input tensors (.safetensors).")
    var inputs: String

    @Option(name: .long, help: "Where to write `sample` (.safetensors).")
    var output: String?

    @OptionGroup var backendOptions: BackendOptions

    @OptionGroup var loraOptions: LoRAOptions

    @Option(name: .customLong("repeat"), parsing: .unconditional, help: "Forward passes to time after loading; the best is reported.")
    var repeatCount = 1

    @Flag(name: .long, help: "Print a JSON line with timings and peak memory.")
    var json = false

    @Flag(name: .long, help: "After the passes, print where the time went, by op family (stderr).")
    var timings = false

    func run() throws {
        let loadStart = DispatchTime.now().uptimeNanoseconds
        let backend = try backendOptions.makeBackend()
        let flux = try FluxModel.load(path: model, config: config)
        let tensors = try SafeTensorsFile(path: inputs).allTensors()
        let prepared = try FluxInputs(tensors, config: flux.config)
        let (passes, mergeSeconds) = try loraOptions.transformers(flux, backend: backend)
        let graphs = try passes.map { try $0.graph(batch: prepared.batch, textLength: prepared.textLength, imageLength: prepared.imageLength) }
        let graph = graphs[0]
        let weightSets = Graph.weightSets(of: graphs)
        let loading = ForwardProgress(enabled: progressEnabled(json: json), label: "weights")
        let resident = try backend.makeResident(weightSets.map { ($0, $0.handles) }, progress: loading.callback)
        loading.finish()
        defer { resident.release() }
        let loadSeconds = Double(DispatchTime.now().uptimeNanoseconds - loadStart) / 1e9
        var transientBytes = 0, peakDevice: Int?, uploadWait = 0.0, segments = 0
        var best = Double.infinity
        let bar = ForwardProgress(enabled: progressEnabled(json: json), label: "forward")
        var sample: HostTensor?
        for _ in 0..<max(1, repeatCount) {
            let start = DispatchTime.now().uptimeNanoseconds
            // Several passes (LoRA Composite): the prediction is their mean.
            let outputs = try graphs.map { graph in
                bar.begin()
                defer { bar.finish() }
                let result = try backend.execute(graph, inputs: prepared.bindings, options: ExecutionOptions(progress: bar.callback))
                transientBytes = max(transientBytes, result.transientWeightBytes)
                if let peak = result.peakDeviceBytes { peakDevice = max(peakDevice ?? 0, peak) }
                uploadWait = max(uploadWait, result.uploadWaitSeconds)
                segments = max(segments, result.streamedSegments)
                let output = result.outputs[0]
                try NonFiniteDiagnosis.check([output], stage: "the transformer", graph: graph, inputs: prepared.bindings, on: backend)
                return output
            }
            sample = outputs.count == 1 ? outputs[0] : Self.mean(outputs)
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        if timings {
            let result = try backend.execute(graph, inputs: prepared.bindings, options: ExecutionOptions(recordTimings: true))
            var byKind: [String: (seconds: Double, count: Int)] = [:]
            for node in graph.nodes {
                let key = node.op.kind.rawValue
                byKind[key, default: (0, 0)].seconds += result.nodeSeconds[node.id] ?? 0
                byKind[key, default: (0, 0)].count += 1
            }
            let total = byKind.values.reduce(0) { $0 + $1.seconds }
            for (kind, entry) in byKind.sorted(by: { $0.value.seconds > $1.value.seconds }) where entry.seconds > 0 {
                FileHandle.standardError.write(Data(String(format: "%-16@ %5d nodes %9.3f ms %5.1f%%\n", kind as NSString, entry.count,
                                                           entry.seconds * 1e3, 100 * entry.seconds / max(total, 1e-12)).utf8))
            }
            FileHandle.standardError.write(Data("slowest nodes:\n".utf8))
            let slowest = graph.nodes.sorted { (result.nodeSeconds[$0.id] ?? 0) > (result.nodeSeconds[$1.id] ?? 0) }.prefix(20)
            for node in slowest {
                FileHandle.standardError.write(Data(String(format: "  %%%-5d %9.3f ms  %@ %@ → %@\n", node.id, (result.nodeSeconds[node.id] ?? 0) * 1e3,
                                                           node.op.summary as NSString, (node.label ?? "") as NSString,
                                                           "\(node.type.shape)" as NSString).utf8))
            }
        }
        if let output, let sample {
            try SafeTensorsWriter.write([("sample", sample)], metadata: ["producer": "lorafuse dit", "backend": backend.name], to: output)
        }
        var fields: [String: Any] = ["command": "dit", "backend": backend.name, "device": backend.device.name,
                                     "seconds": best, "load_seconds": loadSeconds, "peak_rss_bytes": PeakMemory.residentBytes(),
                                     "batch": prepared.batch, "image_tokens": prepared.imageLength, "text_tokens": prepared.textLength]
        // The weights: their bytes, what the backend holds and allocated for them, and what
        // had to be copied in per forward (0 when all are resident); then the device.
        fields["resident_weight_bytes"] = [backend.name: resident.byteCount]
        fields["weights"] = [
            "bytes": weightSets.reduce(0) { $0 + $1.byteCount },
            "sets": weightSets.map { ["name": $0.name, "tensors": $0.count, "bytes": $0.byteCount] as [String: Any] },
            "allocated_bytes": [backend.name: resident.allocatedBytes],
            "transient_bytes_per_forward": transientBytes,
        ] as [String: Any]
        let memory = backend.memory()
        var device: [String: Any] = [:]
        if let total = memory.total { device["total_bytes"] = total }
        if let free = memory.free { device["free_bytes"] = free }
        if let budget = memory.budget { device["budget_bytes"] = budget }
        // Under the device budget: the most held at once, and what streaming cost per forward.
        if let peakDevice {
            device["peak_bytes"] = peakDevice
            device["uploaded_bytes_per_forward"] = transientBytes
            device["upload_wait_seconds"] = uploadWait
            device["streamed_segments"] = segments
            device["streamed_weight_bytes"] = resident.streamedBytes
        }
        fields["device_memory"] = device
        if !loraOptions.loras.isEmpty || loraOptions.fusion != nil {
            fields["loras"] = loraOptions.loras.count + (loraOptions.fusion == nil || loraOptions.fusion == "autolora" ? 0 : 2)
            fields["lora_mode"] = mergeSeconds == nil ? "hot" : "merged"
            if let mergeSeconds { fields["merge_seconds"] = mergeSeconds }
            if let fusion = loraOptions.fusion {
                fields["fusion"] = fusion
                fields["progress"] = loraOptions.progress ?? 0
                fields["passes"] = graphs.count
            }
        }
        if json {
            print(try JSONOutput.line(fields))
        } else {
            print(String(format: "dit on %@ (%@): %.3f s per forward (best of %d), load %.3f s, peak RSS %.1f MiB%@",
                         backend.name, backend.device.name, best, max(1, repeatCount), loadSeconds,
                         Double(PeakMemory.residentBytes()) / 1048576, output.map { ", wrote \($0)" } ?? ""))
            if let mergeSeconds {
                print(String(format: "LoRAs merged in %.3f s", mergeSeconds))
            } else if loraOptions.fusion == "autolora" {
                print("autolora: \(loraOptions.loras.count) LoRA(s) gated by \(loraOptions.fusionWeights ?? "")")
            } else if let fusion = loraOptions.fusion {
                print("\(fusion) fusion at progress \(loraOptions.progress ?? 0): \(graphs.count) pass(es), LoRAs applied hot")
            } else if !loraOptions.loras.isEmpty {
                print("\(loraOptions.loras.count) LoRA(s) applied hot")
            }
        }
    }

    /// Element-wise mean of same-shaped float32 tensors.
    static func mean(_ tensors: [HostTensor]) -> HostTensor {
        var sum = [Double](repeating: 0, count: tensors[0].elementCount)
        for tensor in tensors { for (index, value) in tensor.floats().enumerated() { sum[index] += Double(value) } }
        return HostTensor(shape: tensors[0].shape, floats: sum.map { Float($0 / Double(tensors.count)) })
    }
}
