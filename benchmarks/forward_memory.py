import resource, sys, torch, time
from fcnseg.models.fcn import build_model
torch.set_num_threads(1)
arch, width, side = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
m = build_model(arch, 4, 6, width).eval()
x = torch.randn(1, 4, side, side)
def rss(): return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])/1024
open('/proc/self/clear_refs','w').write('5')
before = rss()
with torch.inference_mode():
    y = m(x).float().argmax(1)
hwm = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])/1024
print(arch, width, side, f"extra {hwm-before:.0f} MB", f"{(hwm-before)*2**20/side/side:.0f} B/px")
