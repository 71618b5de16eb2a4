"""The figure: real test slices beside each prior's samples (evalprior.py's imgs_*_s2.npz, in this
folder). usage: looks.py DATA (the OASIS-1 subset in the Keras layout)"""
import sys
import numpy as np, matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
from brainvq.data.sources import DataConfig, load_split
from brainvq.data.dataset import as_tensor
test=load_split(DataConfig(root=sys.argv[1]),"test",progress=False)
tp=np.asarray(test.positions); tx=as_tensor(test).numpy()
names={"s25":"recipe's bottom level (2.86 epochs)","k5":"kernel 5 (2.28 epochs)","h24":"width 24"}
import json
d={n:np.load(f"imgs_{n}_s2.npz") for n in names}
r=json.load(open("h24/result.json")); names["h24"]=f"width 24 ({r['epochs_run']} epochs)"
pos=d["s25"]["positions"]; idx=[5,20,35,50]
fig,ax=plt.subplots(len(idx),1+len(names),figsize=(2.6*(1+len(names)),2.6*len(idx)))
for r_,i in enumerate(idx):
    j=int(np.argmin(abs(tp-pos[i]))); ax[r_,0].imshow(tx[j,0],cmap="gray",vmin=0,vmax=1); ax[r_,0].set_title(f"real test, position {pos[i]:.2f}",fontsize=8)
    for c,n in enumerate(names):
        ax[r_,c+1].imshow(d[n]["samples"][i,0],cmap="gray",vmin=0,vmax=1); ax[r_,c+1].set_title(names[n],fontsize=8)
for a in ax.ravel(): a.axis("off")
plt.tight_layout(); plt.savefig("oasis1_bottom_level_width.png",dpi=70)
