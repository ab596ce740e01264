#include "CVulkan.h"

#ifdef LORAFUSE_HAVE_VULKAN_HEADERS

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lf_vulkan_open(LFVulkanFunctions *functions, char *error, unsigned long errorSize) {
    memset(functions, 0, sizeof(*functions));
    const char *names[] = {"libvulkan.so.1", "libvulkan.so", "libvulkan.1.dylib", "libMoltenVK.dylib"};
    void *library = NULL;
    // LORAFUSE_VULKAN_LOADER names another loader library (or a missing one, to test the
    // no-Vulkan path on a machine that has it).
    const char *override = getenv("LORAFUSE_VULKAN_LOADER");
    if (override && override[0]) {
        library = dlopen(override, RTLD_NOW | RTLD_LOCAL);
    } else {
        for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]) && !library; i++) {
            library = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        }
    }
    if (!library) {
        const char *reason = dlerror();
        snprintf(error, errorSize, "cannot load the Vulkan loader libvulkan.so.1 (%s)", reason ? reason : "not found");
        return -1;
    }
    functions->library = library;
    functions->vkGetInstanceProcAddr = (PFN_vkGetInstanceProcAddr)dlsym(library, "vkGetInstanceProcAddr");
    if (!functions->vkGetInstanceProcAddr) {
        snprintf(error, errorSize, "libvulkan.so.1 has no vkGetInstanceProcAddr");
        return -1;
    }
#define LF_VK_LOAD_GLOBAL(name) functions->name = (PFN_##name)functions->vkGetInstanceProcAddr(NULL, #name);
    LF_VK_GLOBAL_FUNCTIONS(LF_VK_LOAD_GLOBAL)
    if (!functions->vkCreateInstance) {
        snprintf(error, errorSize, "the Vulkan loader does not provide vkCreateInstance");
        return -1;
    }
    return 0;
}

const char *lf_vulkan_load_instance(LFVulkanFunctions *functions, VkInstance instance) {
#define LF_VK_LOAD_INSTANCE(name) \
    functions->name = (PFN_##name)functions->vkGetInstanceProcAddr(instance, #name); \
    if (!functions->name) return #name;
    LF_VK_INSTANCE_FUNCTIONS(LF_VK_LOAD_INSTANCE)
    return NULL;
}

const char *lf_vulkan_load_device(LFVulkanFunctions *functions, VkDevice device) {
#define LF_VK_LOAD_DEVICE(name) \
    functions->name = (PFN_##name)functions->vkGetDeviceProcAddr(device, #name); \
    if (!functions->name) return #name;
    LF_VK_DEVICE_FUNCTIONS(LF_VK_LOAD_DEVICE)
#define LF_VK_LOAD_OPTIONAL(name) functions->name = (PFN_##name)functions->vkGetDeviceProcAddr(device, #name);
    LF_VK_OPTIONAL_DEVICE_FUNCTIONS(LF_VK_LOAD_OPTIONAL)
    return NULL;
}

#endif  // LORAFUSE_HAVE_VULKAN_HEADERS
