import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion

/// AutoLoRA's retriever (`LoRAEncoder` of the research code, lzws/AutoLoRA `retriever.py`):
/// it embeds a LoRA from its weights. One token per LoRA layer of DiffSynth's fused FLUX
/// layout (per double block a/b × qkv, out, ff.0, ff.2, norm1; per single block qkv+MLP,
/// proj_out, norm): a learned probe x pushed through the LoRA (x·Aᵀ·Bᵀ), a Linear shared by
/// the layers of that type to the embedding width, plus a learned position embedding; then
/// CLIP-style causal encoder layers, a final LayerNorm and the mean over tokens.
///
/// LoRAs are read as DiffSynth reads them: fused q/k/v (and single blocks' q/k/v/MLP) give
/// the concatenation of their parts' outputs (a missing part is zeros), only kohya `.alpha`
/// tensors scale; a layer the LoRA lacks is a zero LoRA (its token is the projection bias);
/// LoRA layers outside DiffSynth's blocks (embedders, final layer) are not read, as there.
public struct LoRAWeightEncoder: Sendable {
    /// One LoRA layer as the encoder reads it: its name, type and factors.
    public struct Layer: Sendable {
        /// DiffSynth's name, e.g. `blocks.0.attn.a_to_qkv`.
        public let name: String
        /// Its type (`attn.a_to_qkv`), which picks the projection.
        public let kind: String
        public let inFeatures: Int
        /// The diffusers Linears it fuses and the width of each in its output.
        public let parts: [(layer: String, width: Int)]
        public var outFeatures: Int { parts.reduce(0) { $0 + $1.width } }
    }

    public let path: String
    public let layers: [Layer]
    public let width: Int
    public let encoderLayers: Int
    public let intermediate: Int
    public let heads: Int
    /// A content hash of the weights: embeddings made with other weights are stale.
    public let version: String
    let source: TensorSource

    static let headDim = 64

    /// Loads weights under the research code's state-dict names
    /// (`embedder.model_dict.<layer, '.'→'___'>.x`, `embedder.proj_dict.<type>.weight`,
    /// `position_embeds`, `encoders.N.attn.to_q.weight`, …, `final_layer_norm.weight`).
    public static func load(path: String) throws -> LoRAWeightEncoder {
        func fail(_ reason: String) -> ModelError { .notAModel(path: path, reason: reason) }
        let file = try SafeTensorsFile(path: path)
        let source = try TensorSource(files: [file], description: path)
        guard source.contains("position_embeds") else { throw fail("no position_embeds (not an AutoLoRA weight encoder)") }
        let names = Set(source.names.compactMap { name -> String? in
            guard name.hasPrefix("embedder.model_dict."), name.hasSuffix(".x") else { return nil }
            return String(name.dropFirst("embedder.model_dict.".count).dropLast(2)).replacingOccurrences(of: "___", with: ".")
        })
        func blocks(_ head: String) -> Int {
            (names.compactMap { name -> Int? in
                guard name.hasPrefix(head + ".") else { return nil }
                return Int(name.dropFirst(head.count + 1).split(separator: ".").first ?? "")
            }.max() ?? -1) + 1
        }
        let order = AutoLoRAMergers.layerNames(layerCount: blocks("blocks"), singleLayerCount: blocks("single_blocks"))
        guard !order.isEmpty, Set(order) == names else {
            throw fail("its probes do not cover DiffSynth's FLUX layers: missing \(order.filter { !names.contains($0) }.prefix(4)), unknown \(names.subtracting(order).sorted().prefix(4))")
        }
        let positions = try source.tensor("position_embeds").shape
        guard positions.rank == 3, positions[1] == order.count else {
            throw fail("position_embeds is \(positions), expected [1, \(order.count), width]")
        }
        let width = positions[2]
        var layers: [Layer] = []
        for name in order {
            let x = try source.tensor("embedder.model_dict.\(name.replacingOccurrences(of: ".", with: "___")).x").shape
            guard x.rank == 3, x[0] == 1, x[1] == 1 else { throw fail("the probe of \(name) is \(x), expected [1, 1, in] (one probe per layer)") }
            let kind = name.split(separator: ".").dropFirst(2).joined(separator: ".")  // without `blocks.N.`
            let projection = try source.tensor("embedder.proj_dict.\(kind.replacingOccurrences(of: ".", with: "___")).weight").shape
            guard projection.rank == 2, projection[0] == width else { throw fail("the \(kind) projection is \(projection), expected [\(width), out]") }
            let out = projection[1], inFeatures = x[2]
            let targets = LoRANaming.target(of: name)?.parts.map(\.layer) ?? []
            let widths: [Int]
            switch targets.count {
            case 3: widths = [out / 3, out / 3, out / 3]
            case 4: widths = [inFeatures, inFeatures, inFeatures, out - 3 * inFeatures]
            default: widths = [out]
            }
            guard !targets.isEmpty, widths.reduce(0, +) == out, widths.allSatisfy({ $0 > 0 }) else {
                throw fail("cannot split \(name)'s \(out) outputs over \(targets)")
            }
            layers.append(Layer(name: name, kind: kind, inFeatures: inFeatures, parts: Array(zip(targets, widths))))
        }
        let encoderLayers = source.childCount("encoders")
        guard encoderLayers > 0 else { throw fail("no encoders.N layers") }
        let inner = try source.tensor("encoders.0.attn.to_q.weight").shape[0]
        let intermediate = try source.tensor("encoders.0.fc1.weight").shape[0]
        guard inner % headDim == 0 else { throw fail("attention width \(inner) is not a multiple of \(headDim)") }
        return LoRAWeightEncoder(path: path, layers: layers, width: width, encoderLayers: encoderLayers, intermediate: intermediate,
                                 heads: inner / headDim, version: try ContentHash.of(path: path), source: source)
    }

    /// The graph of `lora`'s embedding: output [width].
    public func graph(for lora: LoRAFile) throws -> Graph {
        var modules: [String: LoRAModule] = [:]
        for module in lora.modules { modules[module.layer] = module }
        var graph = Graph()
        let source = self.source
        let weight: CLIPLayerBuilder.Weight = { graph, name, shape in
            let value = try source.tensor(name, shape: shape)
            return graph.parameter(name, value.converted(to: .float32))
        }
        // Each layer's LoRA output x·Aᵀ·Bᵀ [1, out] (zeros where the LoRA lacks it); the layers
        // of one type are stacked and projected together (one matmul per type, not per layer),
        // then the tokens are put back in layer order with one gather.
        var outputsByKind: [String: [Tensor]] = [:]
        var kindOrder: [String] = []
        var rowOf: [(kind: String, row: Int)] = []
        for layer in layers {
            let present = layer.parts.contains { modules[$0.layer] != nil }
            var output: Tensor
            if !present {
                output = graph.parameter("zeros.\(layer.outFeatures)",
                                         HostTensor(shape: [1, layer.outFeatures], floats: [Float](repeating: 0, count: layer.outFeatures)))
            } else {
                let key = layer.name.replacingOccurrences(of: ".", with: "___")
                let probe = try graph.reshape(weight(&graph, "embedder.model_dict.\(key).x", [1, 1, layer.inFeatures]), [1, layer.inFeatures])
                var outputs: [Tensor] = []
                for part in layer.parts {
                    guard let module = modules[part.layer] else {
                        outputs.append(graph.parameter("zeros.\(part.width)", HostTensor(shape: [1, part.width], floats: [Float](repeating: 0, count: part.width))))
                        continue
                    }
                    guard module.down.shape[1] == layer.inFeatures, module.up.shape[0] == part.width else {
                        throw LoRAError.shapeMismatch(path: lora.path, key: module.sourceModule, actual: module.deltaShape,
                                                      expected: "[\(part.width), \(layer.inFeatures)] for \(part.layer) (\(layer.name) of the weight encoder)")
                    }
                    let low = try graph.matmul(probe, graph.parameter("\(part.layer).down", module.down), transposeB: true)
                    var partOutput = try graph.matmul(low, graph.parameter("\(part.layer).up", module.up), transposeB: true)
                    let scale = AutoLoRAFusion.fileScale(module, in: lora)
                    if scale != 1 { partOutput = try graph.scale(partOutput, scale) }
                    outputs.append(partOutput)
                }
                output = outputs.count == 1 ? outputs[0] : try graph.concat(outputs, axis: 1)
            }
            if outputsByKind[layer.kind] == nil { kindOrder.append(layer.kind) }
            rowOf.append((layer.kind, outputsByKind[layer.kind, default: []].count))
            outputsByKind[layer.kind, default: []].append(output)
        }
        var projected: [Tensor] = []
        var firstRow: [String: Int] = [:]
        var rowCount = 0
        for kind in kindOrder {
            let rows = outputsByKind[kind]!, name = kind.replacingOccurrences(of: ".", with: "___")
            let stacked = rows.count == 1 ? rows[0] : try graph.concat(rows, axis: 0)
            let out = stacked.shape[1]
            projected.append(try graph.linear(stacked, weight: weight(&graph, "embedder.proj_dict.\(name).weight", [width, out]),
                                              bias: weight(&graph, "embedder.proj_dict.\(name).bias", [width])))
            firstRow[kind] = rowCount
            rowCount += rows.count
        }
        let grouped = projected.count == 1 ? projected[0] : try graph.concat(projected, axis: 0)
        let order = graph.parameter("token_order", HostTensor(shape: [layers.count], dtype: .int32,
                                                              values: rowOf.map { Double(firstRow[$0.kind]! + $0.row) }))
        let tokens = try graph.embedding(table: grouped, ids: order)
        let count = layers.count
        var hidden = try graph.add(tokens, graph.reshape(weight(&graph, "position_embeds", [1, count, width]), [count, width]))
        hidden = try graph.reshape(hidden, [1, count, width])
        let builder = CLIPLayerBuilder(width: width, heads: heads, headDim: Self.headDim, intermediate: intermediate,
                                       activation: "quick_gelu", epsilon: 1e-5, names: .diffSynth, weight: weight)
        for index in 0..<encoderLayers { hidden = try builder.layer(&graph, hidden, prefix: "encoders.\(index)") }
        let final = try builder.layerNorm(&graph, hidden, "final_layer_norm")
        let mean = graph.parameter("mean", HostTensor(shape: [1, 1, count], floats: [Float](repeating: 1 / Float(count), count: count)))
        let embedding = try graph.reshape(graph.matmul(mean, final), [width])
        graph.label(embedding, "embedding")
        graph.markOutput(embedding)
        return graph
    }

    /// `lora`'s embedding on `backend`.
    public func embed(_ lora: LoRAFile, on backend: any Backend) throws -> [Float] {
        try backend.execute(graph(for: lora), inputs: [:]).outputs[0].floats()
    }
}
