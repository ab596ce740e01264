// Vulkan headers without prototypes: LoRAFuse never links libvulkan. The loader is opened
// with dlopen at run time (as volk does), so the engine starts on machines without it.
#ifndef LORAFUSE_CVULKAN_H
#define LORAFUSE_CVULKAN_H

// Without the system's Vulkan headers this header is empty and the Swift side builds a
// Vulkan plugin that reports why it is unavailable (see module.modulemap).
#if __has_include(<vulkan/vulkan.h>)
#define LORAFUSE_HAVE_VULKAN_HEADERS 1
#define VK_NO_PROTOTYPES 1
#include <vulkan/vulkan.h>

#define LF_VK_GLOBAL_FUNCTIONS(X) \
    X(vkCreateInstance) \
    X(vkEnumerateInstanceVersion)

#define LF_VK_INSTANCE_FUNCTIONS(X) \
    X(vkDestroyInstance) \
    X(vkEnumeratePhysicalDevices) \
    X(vkGetPhysicalDeviceProperties) \
    X(vkGetPhysicalDeviceProperties2) \
    X(vkGetPhysicalDeviceQueueFamilyProperties) \
    X(vkGetPhysicalDeviceMemoryProperties) \
    X(vkGetPhysicalDeviceMemoryProperties2) \
    X(vkEnumerateDeviceExtensionProperties) \
    X(vkGetPhysicalDeviceFeatures2) \
    X(vkCreateDevice) \
    X(vkGetDeviceProcAddr)

#define LF_VK_DEVICE_FUNCTIONS(X) \
    X(vkDestroyDevice) \
    X(vkGetDeviceQueue) \
    X(vkCreateBuffer) \
    X(vkDestroyBuffer) \
    X(vkCreateBufferView) \
    X(vkDestroyBufferView) \
    X(vkGetBufferMemoryRequirements) \
    X(vkAllocateMemory) \
    X(vkFreeMemory) \
    X(vkBindBufferMemory) \
    X(vkMapMemory) \
    X(vkUnmapMemory) \
    X(vkCreateShaderModule) \
    X(vkDestroyShaderModule) \
    X(vkCreateDescriptorSetLayout) \
    X(vkDestroyDescriptorSetLayout) \
    X(vkCreatePipelineLayout) \
    X(vkDestroyPipelineLayout) \
    X(vkCreateComputePipelines) \
    X(vkDestroyPipeline) \
    X(vkCreateDescriptorPool) \
    X(vkDestroyDescriptorPool) \
    X(vkResetDescriptorPool) \
    X(vkAllocateDescriptorSets) \
    X(vkUpdateDescriptorSets) \
    X(vkCreateCommandPool) \
    X(vkDestroyCommandPool) \
    X(vkAllocateCommandBuffers) \
    X(vkResetCommandBuffer) \
    X(vkFreeCommandBuffers) \
    X(vkBeginCommandBuffer) \
    X(vkEndCommandBuffer) \
    X(vkCmdBindPipeline) \
    X(vkCmdBindDescriptorSets) \
    X(vkCmdPushConstants) \
    X(vkCmdDispatch) \
    X(vkCmdPipelineBarrier) \
    X(vkCmdCopyBuffer) \
    X(vkCmdWriteTimestamp) \
    X(vkCmdResetQueryPool) \
    X(vkCreateQueryPool) \
    X(vkDestroyQueryPool) \
    X(vkGetQueryPoolResults) \
    X(vkQueueSubmit) \
    X(vkQueueWaitIdle) \
    X(vkCreateFence) \
    X(vkDestroyFence) \
    X(vkWaitForFences) \
    X(vkGetFenceStatus) \
    X(vkResetFences) \
    X(vkCreateSemaphore) \
    X(vkDestroySemaphore) \
    X(vkDeviceWaitIdle)

/// Device functions of optional extensions: NULL where the extension is not enabled.
#define LF_VK_OPTIONAL_DEVICE_FUNCTIONS(X) \
    X(vkGetMemoryHostPointerPropertiesEXT)

#define LF_VK_DECLARE(name) PFN_##name name;

/// Every Vulkan entry point LoRAFuse uses, filled in three stages (library, instance, device).
typedef struct LFVulkanFunctions {
    void *library;
    PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr;
    LF_VK_GLOBAL_FUNCTIONS(LF_VK_DECLARE)
    LF_VK_INSTANCE_FUNCTIONS(LF_VK_DECLARE)
    LF_VK_DEVICE_FUNCTIONS(LF_VK_DECLARE)
    LF_VK_OPTIONAL_DEVICE_FUNCTIONS(LF_VK_DECLARE)
} LFVulkanFunctions;

/// Opens the Vulkan loader (libvulkan.so.1) and resolves the global functions.
/// Returns 0 on success; otherwise writes a reason into `error`.
int lf_vulkan_open(LFVulkanFunctions *functions, char *error, unsigned long errorSize);

/// Resolves the instance-level functions; returns the name of the first missing one or NULL.
const char *lf_vulkan_load_instance(LFVulkanFunctions *functions, VkInstance instance);

/// Resolves the device-level functions; returns the name of the first missing one or NULL.
const char *lf_vulkan_load_device(LFVulkanFunctions *functions, VkDevice device);

#endif  // __has_include(<vulkan/vulkan.h>)
#endif
