// The spec's JavaScript integration example (data-export-system.txt, "JavaScript Integration"),
// run by tests/api/examples.rs under Node against `kasad demo`. The class is copied unchanged;
// the usage block is the spec's with a real token, device, recent dates and the demo's base
// URL, and without its browser-only download-link lines (URL.createObjectURL, document).
class KasaDataExporter {
    constructor(baseUrl, token) {
        this.baseUrl = baseUrl;
        this.token = token;
    }
    
    async createExport(config) {
        const response = await fetch(`${this.baseUrl}/api/exports/create`, {
            method: 'POST',
            headers: {
                'Authorization': `Bearer ${this.token}`,
                'Content-Type': 'application/json'
            },
            body: JSON.stringify(config)
        });
        
        return await response.json();
    }
    
    async downloadExport(exportId) {
        const response = await fetch(`${this.baseUrl}/api/exports/download/${exportId}`, {
            headers: {
                'Authorization': `Bearer ${this.token}`
            }
        });
        
        return await response.blob();
    }
    
    async waitForCompletion(exportId, maxWaitTime = 300000) {
        const startTime = Date.now();
        
        while (Date.now() - startTime < maxWaitTime) {
            const response = await fetch(`${this.baseUrl}/api/exports/${exportId}`, {
                headers: {
                    'Authorization': `Bearer ${this.token}`
                }
            });
            
            const status = await response.json();
            
            if (status.status === 'completed') {
                return status;
            } else if (status.status === 'failed') {
                throw new Error('Export failed');
            }
            
            await new Promise(resolve => setTimeout(resolve, 5000));
        }
        
        throw new Error('Export timeout');
    }
}

// Usage
const exporter = new KasaDataExporter(process.env.KASAD_BASE, process.env.KASAD_TOKEN);

const exportConfig = {
    export_type: 'device_data',
    format: 'json',
    date_range: {
        start: process.env.KASAD_START,
        end: process.env.KASAD_END
    },
    devices: [process.env.KASAD_DEVICE_IP],
    fields: ['timestamp', 'power_w', 'energy_kwh', 'cost']
};

async function exportData() {
    try {
        const exportJob = await exporter.createExport(exportConfig);
        console.log('Export created:', exportJob.export_id);
        
        await exporter.waitForCompletion(exportJob.export_id);
        console.log('Export completed');
        
        const data = await exporter.downloadExport(exportJob.export_id);
        console.log('Data downloaded:', data.size, 'bytes');
        
    } catch (error) {
        console.error('Export failed:', error);
    }
}

exportData();
